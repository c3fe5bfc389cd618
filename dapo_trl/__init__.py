"""dapo-trl: the complete DAPO recipe for Hugging Face TRL.

```python
from dapo_trl import DAPOConfig, DAPOTrainer
```
"""

from .config import DAPOConfig
from .trainer import DAPOTrainer


__version__ = "0.1.0"
__all__ = ["DAPOConfig", "DAPOTrainer", "__version__"]
