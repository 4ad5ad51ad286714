"""Real DICOM peers and data the demo, the benchmarks and the tests start: a throw-away Orthanc on
loopback ports, free-port helpers, and builders of SYNTHETIC studies (labelled as such in every file)."""
