"""gds-reid: unsupervised domain-adaptive person re-identification with GDS-H."""

__version__ = "0.1.0"
