"""Where things are and how settings reach Feast: environments, the config guard, TLS,
auth settings, the thin client's configuration, the Feast command runner."""
