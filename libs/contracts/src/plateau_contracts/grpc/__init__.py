"""gRPC stubs generated from proto/ by ``python -m plateau_contracts.codegen``.

Import services and messages as ``plateau_contracts.grpc.<context>.v1.<file>_pb2`` and
``..._pb2_grpc``. Nothing here is edited by hand.
"""
