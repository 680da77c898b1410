"""Common library of the Karnak gateway services.

Only what two or more services use lives here: configuration models, the message envelope, the broker
client and topology, the blob store, metrics/health, logging and the DICOM engines.
"""

__version__ = "0.1.0"
