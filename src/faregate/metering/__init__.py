"""Usage events: how a request becomes Lago-style events, and the durable batched writer."""
