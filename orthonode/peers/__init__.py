"""The peers and data ``orthonode demo`` starts: a throw-away Orthanc on loopback ports, a plain Storage
SCP, a free-port helper, and the SYNTHETIC (or PNG-wrapped) knee radiographs it sends. What only the
tests need builds on these in ``tests/support/peers``."""
