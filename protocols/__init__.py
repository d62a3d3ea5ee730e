"""Built-in protocols; importing this package registers them (explicit imports, one per protocol)."""

from . import clean  # noqa: F401
from . import lowdata  # noqa: F401
from . import adversarial  # noqa: F401
from . import corruption  # noqa: F401
