"""The platform's Feast store types, selected by `type:` in feature_store.yaml."""
