"""Who may send: API keys for servers (`api_keys`), signed visitor tokens for browsers (`visitor`)."""
