"""Who is calling, and whether they may: identities (OIDC, Kubernetes) and Feast's permissions."""
