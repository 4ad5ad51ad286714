"""Test-support library for integration tests that talk to real peers.

Modules:

- ``support.ports``: free loopback ports and waiting for a listener (from ``orthonode.peers.ports``).
- ``support.services``: availability of real services (PostgreSQL, Redis, RabbitMQ, binaries); a missing
  service skips the test locally and fails it in CI.
- ``support.dcmtk``: wrappers around dcmtk's command-line tools, dicom3tools' ``dciodvfy`` and a
  ``storescp`` receiver.
- ``support.node``: ``orthonode serve`` and ``orthonode worker`` as real processes.

The throw-away Orthanc and the SYNTHETIC study builders live in the package (``orthonode.peers``),
because the demo and the benchmarks use them too.
"""
