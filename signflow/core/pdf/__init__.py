"""Uploaded PDF bytes: the sandbox that parses them, normalisation, previews."""
