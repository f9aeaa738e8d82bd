"""The request-collecting proxy in front of the serving engine."""
