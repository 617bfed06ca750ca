"""Rule sets the tests share."""

V1_RULES = [
    {"name": "hot", "condition": "input.temperature > 25", "output": {"alert": "raise"}},
]
V2_RULES = [
    {"name": "hot", "condition": "input.temperature > 27", "output": {"alert": "raise"}},
    {"name": "zone", "condition": 'input.zone in ["A", "B"]', "output": {"alert": "watch"}},
]
DEFAULT_OUTPUT = {"alert": "none"}
