"""oisp-sensor daemon: eBPF capture of AI traffic turned into OISP v0.1 events."""

__version__ = "0.1.0"
