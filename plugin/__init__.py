"""What engineers run and what touches the serving engine: adapters, proxy, replica agent, CLI."""
