"""Built-in methods; importing this package registers them (explicit imports, one per method)."""

from . import erm  # noqa: F401
from . import pushpull  # noqa: F401
from . import tenet  # noqa: F401
