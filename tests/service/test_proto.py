"""The committed stubs are what `make proto` generates from the committed .proto."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

GENERATED = REPO_ROOT / "proto" / "ecg_atlas" / "v1"
# Lines that name the generator's version (a newer grpcio-tools is not a drift of the contract).
_VERSION_LINES = re.compile(r"^(# Protobuf Python Version:.*|GRPC_GENERATED_VERSION = .*)$", re.M)
_RUNTIME_CHECK = re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)", re.S)


def _normalised(path: Path) -> str:
    return _RUNTIME_CHECK.sub("", _VERSION_LINES.sub("", path.read_text()))


def test_stubs_match_the_proto(tmp_path):
    spec = importlib.util.spec_from_file_location("proto_generate", REPO_ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = generate.generate(tmp_path)
    assert {p.name for p in fresh} == {"atlas_pb2.py", "atlas_pb2.pyi", "atlas_pb2_grpc.py"}
    for path in fresh:
        committed = GENERATED / path.name
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert _normalised(path) == _normalised(committed), f"{path.name} is stale: run `make proto`"


def test_stubs_import_as_ecg_atlas_v1():
    from ecg_atlas.v1 import atlas_pb2, atlas_pb2_grpc

    assert atlas_pb2.DESCRIPTOR.package == "ecg_atlas.v1"
    assert hasattr(atlas_pb2_grpc, "AtlasStub")


def test_every_rpc_has_a_role_and_a_request_response_pair():
    from ecg_atlas.service.auth import METHOD_ROLES
    from ecg_atlas.v1 import atlas_pb2

    methods = atlas_pb2.DESCRIPTOR.services_by_name["Atlas"].methods
    assert {m.name for m in methods} == set(METHOD_ROLES)  # a new RPC without a role would be refused
    for m in methods:
        assert (m.input_type.name, m.output_type.name) == (f"{m.name}Request", f"{m.name}Response"), m.name


def test_enum_values_carry_their_type_prefix():
    from ecg_atlas.v1 import atlas_pb2

    for enum in atlas_pb2.DESCRIPTOR.enum_types_by_name.values():
        prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
        assert all(v.name.startswith(prefix) for v in enum.values), enum.name


def test_no_response_field_holds_a_server_path():
    from ecg_atlas.v1 import atlas_pb2

    for message in atlas_pb2.DESCRIPTOR.message_types_by_name.values():
        names = {f.name for f in message.fields}
        assert not names & {"directory", "path", "paths", "tables", "file"}, message.name
