"""A run kind written the way a new app writes one, using nothing of the engine but its
public face (`portal.runs.api`): proof that the shape is enough (tests/runs/test_shape.py)."""
