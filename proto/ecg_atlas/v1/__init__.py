"""Generated gRPC stubs of the ECG Atlas wire contract (package ``ecg_atlas.v1``).

Do not edit the ``*_pb2*`` files: change ``atlas.proto`` and run ``make proto``.
"""
