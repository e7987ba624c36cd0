"""Permissions: which role may do what, decided by Feast on every server and path.

Roles come from the caller's token (OIDC: `resource_access.<client id>.roles` or
`roles`; Kubernetes: the Roles bound to the service account). With no permission at
all Feast lets every authenticated caller do everything, so adding the first one, like
removing or narrowing one, is a breaking change in the rollout plan. With
`AUTH_TYPE=no_auth` none of this is checked.

How Feast decides: a permission matches a request when it names the resource's type (or
a parent type), its name patterns (full-match regexes; none: every name) match, and its
actions include every action asked for at once; one matching permission whose roles the
caller has allows. Nothing matching denies. So a resource is kept from a role only by
leaving it out of every permission that role holds, never by adding one.

What Feast asserts, per request:
- online read by feature service: READ_ONLINE on the service alone (not its views);
  by feature references: on each view, and on the sources of each on-demand view;
- push: WRITE_ONLINE (to online), WRITE_OFFLINE (to offline), or both in one
  permission (online_and_offline) on every view the push source feeds;
- write-to-online-store and materialize: WRITE_ONLINE on the view;
- offline server: READ_OFFLINE on the views and data sources a query reads;
- registry server and UI: DESCRIBE on what they list or get.
"""

import re

from feast import FeatureService
from feast.data_source import DataSource
from feast.feast_object import ALL_FEATURE_VIEW_TYPES
from feast.permissions.action import AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy
from feast.saved_dataset import SavedDataset

READER = "feature-reader"
WRITER = "feature-writer"
TRAINING = "training"
# A service only its model reads; the role is named for it (Kubernetes Role names
# allow no underscores).
FRAUD_DETECTION_V1 = "fraud_detection_v1"
FRAUD_DETECTION_V1_ROLE = "fraud-detection-v1"

# Feature views of every kind: batch, stream, on-demand, label.
VIEWS = list(ALL_FEATURE_VIEW_TYPES)

describe_registry = Permission(
    name="describe-registry",
    # Every type, Permission included: reading the registry reveals no feature values.
    types=[],
    actions=[AuthzedAction.DESCRIBE],
    policy=RoleBasedPolicy(roles=[READER, WRITER, TRAINING, FRAUD_DETECTION_V1_ROLE]),
)

read_online_views = Permission(
    name="read-online-views",
    types=VIEWS,
    actions=[AuthzedAction.READ_ONLINE],
    policy=RoleBasedPolicy(roles=[READER, WRITER]),
)

read_online_services = Permission(
    name="read-online-services",
    types=[FeatureService],
    # Every service but the restricted one.
    name_patterns=[f"(?!{re.escape(FRAUD_DETECTION_V1)}$).*"],
    actions=[AuthzedAction.READ_ONLINE],
    policy=RoleBasedPolicy(roles=[READER, WRITER]),
)

read_online_fraud_detection_v1 = Permission(
    name="read-online-fraud-detection-v1",
    types=[FeatureService],
    name_patterns=[re.escape(FRAUD_DETECTION_V1)],
    actions=[AuthzedAction.READ_ONLINE],
    policy=RoleBasedPolicy(roles=[FRAUD_DETECTION_V1_ROLE]),
)

# Pushes to the online store and writes of whole rows. No WRITE_OFFLINE: the
# Postgres offline store cannot take pushed rows, so such a push is refused as 403
# rather than failing half-way.
write_online = Permission(
    name="write-online",
    types=VIEWS,
    actions=[AuthzedAction.WRITE_ONLINE],
    policy=RoleBasedPolicy(roles=[WRITER]),
)

read_offline = Permission(
    name="read-offline",
    types=[*VIEWS, FeatureService, DataSource, SavedDataset],
    actions=[AuthzedAction.READ_OFFLINE],
    policy=RoleBasedPolicy(roles=[TRAINING]),
)
