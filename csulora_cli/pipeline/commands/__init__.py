"""One module per command: a function from its request (`..types.requests`) to its result (`..types.results`)."""
