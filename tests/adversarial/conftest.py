"""The adversarial suite also attacks a real `cloche up`: share its fixture."""

from tests.integration.conftest import server  # noqa: F401 - pytest finds fixtures by name
