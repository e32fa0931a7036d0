"""The old name of `modules.infotext_utils`, which extensions written for older A1111 still import.

Importing this module gives the very same module object as `modules.infotext_utils`, so state such
as the paste-field registries is shared whichever name an extension uses.
"""

import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
