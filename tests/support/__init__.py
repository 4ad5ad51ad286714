"""Test-support library for integration tests that talk to real peers.

Modules:

- ``support.ports``: free loopback ports and waiting for a listener.
- ``support.services``: availability of real services (PostgreSQL, Redis, RabbitMQ, binaries); a missing
  service skips the test locally and fails it in CI.
- ``support.orthanc``: a real Orthanc (Debian package) as a subprocess on loopback, with REST helpers.
- ``support.dcmtk``: wrappers around dcmtk's command-line tools, dicom3tools' ``dciodvfy`` and a
  ``storescp`` receiver.
- ``support.dicom_factory``: builders of clearly labelled SYNTHETIC DICOM test data.
"""
