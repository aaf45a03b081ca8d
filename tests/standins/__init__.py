"""Loopback stand-ins of the servers the backends talk to (Ollama, OpenAI-compatible), for the tests."""
