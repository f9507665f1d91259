"""clm_helpers: the shared package behind the clm notebooks.

Customer Lifecycle Management (CLM) and Customer Experience (CX) measurement:
data contracts and loading (`data`, `datasets`), one module per metric family,
probabilistic CLV models (`clv`), plots and the Papermill report runner.
"""

__version__ = "0.1.0"
