"""Users, passwords and throttling, second factors, API tokens, signing PINs."""
