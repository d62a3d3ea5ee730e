"""Built-in methods; importing this package registers them (explicit imports, one per method)."""

from . import erm  # noqa: F401
from . import mixup  # noqa: F401
from . import cutmix  # noqa: F401
from . import manifold_mixup  # noqa: F401
from . import catchup  # noqa: F401
from . import pushpull  # noqa: F401
from . import tenet  # noqa: F401
from . import pgd_at  # noqa: F401
from . import cifs  # noqa: F401
from . import augmix  # noqa: F401
