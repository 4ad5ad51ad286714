"""Test-support library for integration tests that talk to real peers.

Modules:

- ``support.peers``: the peers and data the tests start, one family with the package's own
  (``orthonode.peers``, which keeps what ``orthonode demo`` needs and is re-used here, never copied):

  - ``support.peers.ports``: free loopback ports and waiting for a listener.
  - ``support.peers.dcmtk``: wrappers around dcmtk's command-line tools, dicom3tools' ``dciodvfy`` and a
    ``storescp`` receiver.
  - ``support.peers.orthanc``: the package's throw-away Orthanc plus the REST calls only tests make.
  - ``support.peers.synthetic``: SYNTHETIC MR series and Part 10 bytes, beside the package's radiograph
    builders (re-exported).
- ``support.services``: availability of real services (PostgreSQL, Redis, RabbitMQ, binaries); a missing
  service skips the test locally and fails it in CI.
- ``support.node``: ``orthonode serve`` and ``orthonode worker`` as real processes.
- ``support.memory``: peak resident memory (VmHWM) of their process trees, sampled from /proc.
"""
