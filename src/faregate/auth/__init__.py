"""API keys, customers and teams, and the principal a request acts as."""
