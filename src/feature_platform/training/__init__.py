"""Training sets: labels joined with their features as they were known at each label.

`training_set` is Feast's `get_historical_features` under the platform's rule (the
reference every other path is checked against); `engine` is the fast point-in-time join
the `training-set` command runs (`command`)."""

from feature_platform.training.feast_join import ENTITY_COLUMNS, FEATURE_SERVICE, training_set

__all__ = ["ENTITY_COLUMNS", "FEATURE_SERVICE", "training_set"]
