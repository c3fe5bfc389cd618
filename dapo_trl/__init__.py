"""dapo-trl: the complete DAPO recipe for Hugging Face TRL.

```python
from dapo_trl import DAPOConfig, DAPOTrainer
```
"""

from typing import TYPE_CHECKING


__version__ = "0.1.0"
__all__ = ["DAPOConfig", "DAPOTrainer", "__version__"]

if TYPE_CHECKING:
    from .config import DAPOConfig
    from .trainer import DAPOTrainer


def __getattr__(name: str):
    # Lazy: `dapo-trl plot` and `dapo_trl.core` need neither TRL nor transformers, which take seconds to import.
    if name == "DAPOConfig":
        from .config import DAPOConfig

        return DAPOConfig
    if name == "DAPOTrainer":
        from .trainer import DAPOTrainer

        return DAPOTrainer
    raise AttributeError(f"module 'dapo_trl' has no attribute {name!r}")
