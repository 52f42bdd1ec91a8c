"""Business logic that both the API routes and the background jobs call."""
