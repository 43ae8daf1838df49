import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_FORMAT_UNSPECIFIED: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_FLOAT32_LE: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_INT16_LE: _ClassVar[SampleFormat]
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_FLOAT32_LE: SampleFormat
SAMPLE_FORMAT_INT16_LE: SampleFormat

class ECG(_message.Message):
    __slots__ = ("lead_names", "sampling_rate_hz", "n_leads", "n_samples", "sample_format", "samples", "gain", "baseline")
    LEAD_NAMES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    N_LEADS_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GAIN_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    lead_names: _containers.RepeatedScalarFieldContainer[str]
    sampling_rate_hz: float
    n_leads: int
    n_samples: int
    sample_format: SampleFormat
    samples: bytes
    gain: float
    baseline: int
    def __init__(self, lead_names: _Optional[_Iterable[str]] = ..., sampling_rate_hz: _Optional[float] = ..., n_leads: _Optional[int] = ..., n_samples: _Optional[int] = ..., sample_format: _Optional[_Union[SampleFormat, str]] = ..., samples: _Optional[bytes] = ..., gain: _Optional[float] = ..., baseline: _Optional[int] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Matrix(_message.Message):
    __slots__ = ("rows", "cols", "data")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    data: bytes
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null_value", "number", "integer", "text", "flag", "labels", "time")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    null_value: bool
    number: float
    integer: int
    text: str
    flag: bool
    labels: Labels
    time: _timestamp_pb2.Timestamp
    def __init__(self, null_value: _Optional[bool] = ..., number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "preprocess_ms", "inference_ms", "search_ms", "total_ms", "store_ms", "analysis_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    STORE_MS_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    search_ms: float
    total_ms: float
    store_ms: float
    analysis_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., search_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., store_ms: _Optional[float] = ..., analysis_ms: _Optional[float] = ...) -> None: ...

class PreprocessReport(_message.Message):
    __slots__ = ("original_fs", "original_duration_s", "n_segments", "dropped_tail_s", "recorded_leads", "missing_leads", "flat_leads", "nan_leads", "ignored_leads", "preprocessing_version")
    ORIGINAL_FS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    N_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TAIL_S_FIELD_NUMBER: _ClassVar[int]
    RECORDED_LEADS_FIELD_NUMBER: _ClassVar[int]
    MISSING_LEADS_FIELD_NUMBER: _ClassVar[int]
    FLAT_LEADS_FIELD_NUMBER: _ClassVar[int]
    NAN_LEADS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_LEADS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    original_fs: float
    original_duration_s: float
    n_segments: int
    dropped_tail_s: float
    recorded_leads: _containers.RepeatedScalarFieldContainer[str]
    missing_leads: _containers.RepeatedScalarFieldContainer[str]
    flat_leads: _containers.RepeatedScalarFieldContainer[str]
    nan_leads: _containers.RepeatedScalarFieldContainer[str]
    ignored_leads: _containers.RepeatedScalarFieldContainer[str]
    preprocessing_version: str
    def __init__(self, original_fs: _Optional[float] = ..., original_duration_s: _Optional[float] = ..., n_segments: _Optional[int] = ..., dropped_tail_s: _Optional[float] = ..., recorded_leads: _Optional[_Iterable[str]] = ..., missing_leads: _Optional[_Iterable[str]] = ..., flat_leads: _Optional[_Iterable[str]] = ..., nan_leads: _Optional[_Iterable[str]] = ..., ignored_leads: _Optional[_Iterable[str]] = ..., preprocessing_version: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("ecg", "include_segment_vectors")
    ECG_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEGMENT_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ecg: ECG
    include_segment_vectors: bool
    def __init__(self, ecg: _Optional[_Union[ECG, _Mapping]] = ..., include_segment_vectors: _Optional[bool] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("record_vector", "segment_vectors", "report", "model_id", "timing")
    RECORD_VECTOR_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_VECTORS_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    record_vector: Vector
    segment_vectors: Matrix
    report: PreprocessReport
    model_id: str
    timing: Timing
    def __init__(self, record_vector: _Optional[_Union[Vector, _Mapping]] = ..., segment_vectors: _Optional[_Union[Matrix, _Mapping]] = ..., report: _Optional[_Union[PreprocessReport, _Mapping]] = ..., model_id: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("ecg_id", "patient_id", "ecg", "metadata", "replace", "source")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    patient_id: str
    ecg: ECG
    metadata: _containers.MessageMap[str, Value]
    replace: bool
    source: str
    def __init__(self, ecg_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., ecg: _Optional[_Union[ECG, _Mapping]] = ..., metadata: _Optional[_Mapping[str, Value]] = ..., replace: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class IngestError(_message.Message):
    __slots__ = ("index", "ecg_id", "code", "message", "reason", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    index: int
    ecg_id: str
    code: str
    message: str
    reason: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, index: _Optional[int] = ..., ecg_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("received", "stored", "skipped_existing", "failed", "segments", "errors", "timing")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_EXISTING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    received: int
    stored: int
    skipped_existing: int
    failed: int
    segments: int
    errors: _containers.RepeatedCompositeFieldContainer[IngestError]
    timing: Timing
    def __init__(self, received: _Optional[int] = ..., stored: _Optional[int] = ..., skipped_existing: _Optional[int] = ..., failed: _Optional[int] = ..., segments: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[IngestError, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class Term(_message.Message):
    __slots__ = ("column", "op", "value", "values")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    column: str
    op: str
    value: Value
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, column: _Optional[str] = ..., op: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, parts: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("term", "all", "any")
    TERM_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    term: Term
    all: FilterList
    any: FilterList
    def __init__(self, term: _Optional[_Union[Term, _Mapping]] = ..., all: _Optional[_Union[FilterList, _Mapping]] = ..., any: _Optional[_Union[FilterList, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("ecg_id", "ecg", "vector", "k", "filter", "exclude_same_patient", "patient_id", "exclude_self", "include_vectors")
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SAME_PATIENT_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SELF_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    ecg: ECG
    vector: Vector
    k: int
    filter: Filter
    exclude_same_patient: bool
    patient_id: str
    exclude_self: bool
    include_vectors: bool
    def __init__(self, ecg_id: _Optional[str] = ..., ecg: _Optional[_Union[ECG, _Mapping]] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., exclude_same_patient: _Optional[bool] = ..., patient_id: _Optional[str] = ..., exclude_self: _Optional[bool] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class StoredECG(_message.Message):
    __slots__ = ("ecg_id", "patient_id", "metadata", "record_vector", "segment_vectors")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECORD_VECTOR_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    patient_id: str
    metadata: _containers.MessageMap[str, Value]
    record_vector: Vector
    segment_vectors: Matrix
    def __init__(self, ecg_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, Value]] = ..., record_vector: _Optional[_Union[Vector, _Mapping]] = ..., segment_vectors: _Optional[_Union[Matrix, _Mapping]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("score", "ecg")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    score: float
    ecg: StoredECG
    def __init__(self, score: _Optional[float] = ..., ecg: _Optional[_Union[StoredECG, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "query_vector", "timing")
    HITS_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    query_vector: Vector
    timing: Timing
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., query_vector: _Optional[_Union[Vector, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ecg_ids", "include_vectors", "include_segment_vectors")
    ECG_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEGMENT_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ecg_ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    include_segment_vectors: bool
    def __init__(self, ecg_ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ..., include_segment_vectors: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("ecgs", "missing_ids", "timing")
    ECGS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    ecgs: _containers.RepeatedCompositeFieldContainer[StoredECG]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    timing: Timing
    def __init__(self, ecgs: _Optional[_Iterable[_Union[StoredECG, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class GetSignalRequest(_message.Message):
    __slots__ = ("ecg_id",)
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    def __init__(self, ecg_id: _Optional[str] = ...) -> None: ...

class GetSignalResponse(_message.Message):
    __slots__ = ("ecg_id", "ecg", "timing")
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    ecg: ECG
    timing: Timing
    def __init__(self, ecg_id: _Optional[str] = ..., ecg: _Optional[_Union[ECG, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ecg_ids", "patient_id")
    ECG_IDS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ecg_ids: _containers.RepeatedScalarFieldContainer[str]
    patient_id: str
    def __init__(self, ecg_ids: _Optional[_Iterable[str]] = ..., patient_id: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "timing")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    timing: Timing
    def __init__(self, deleted: _Optional[int] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class MetadataUpdate(_message.Message):
    __slots__ = ("ecg_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    metadata: _containers.MessageMap[str, Value]
    def __init__(self, ecg_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class UpdateMetadataRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[MetadataUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[MetadataUpdate, _Mapping]]] = ...) -> None: ...

class UpdateMetadataResponse(_message.Message):
    __slots__ = ("updated", "timing")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    updated: int
    timing: Timing
    def __init__(self, updated: _Optional[int] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_segments", "max_queue_delay_ms", "max_queue_segments", "max_concurrent_rpcs", "max_receive_message_bytes", "max_send_message_bytes", "max_ecg_duration_s", "min_leads", "max_k", "max_ingest_in_flight", "encoder_workers", "threads_per_encoder_worker")
    MAX_BATCH_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RPCS_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ECG_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    MIN_LEADS_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_INGEST_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODER_WORKERS_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_ENCODER_WORKER_FIELD_NUMBER: _ClassVar[int]
    max_batch_segments: int
    max_queue_delay_ms: float
    max_queue_segments: int
    max_concurrent_rpcs: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_ecg_duration_s: float
    min_leads: int
    max_k: int
    max_ingest_in_flight: int
    encoder_workers: int
    threads_per_encoder_worker: int
    def __init__(self, max_batch_segments: _Optional[int] = ..., max_queue_delay_ms: _Optional[float] = ..., max_queue_segments: _Optional[int] = ..., max_concurrent_rpcs: _Optional[int] = ..., max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_ecg_duration_s: _Optional[float] = ..., min_leads: _Optional[int] = ..., max_k: _Optional[int] = ..., max_ingest_in_flight: _Optional[int] = ..., encoder_workers: _Optional[int] = ..., threads_per_encoder_worker: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_id", "checkpoint_sha256", "dim", "dtype", "device", "preprocessing_version", "encoder_notice", "index_kind", "index_backend", "ecg_count", "index_entries", "limits", "versions", "auth_enabled", "tls", "columns", "index_settings", "encoder_contract_json", "timing")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class IndexSettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODER_NOTICE_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_BACKEND_FIELD_NUMBER: _ClassVar[int]
    ECG_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLED_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    INDEX_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_CONTRACT_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    checkpoint_sha256: str
    dim: int
    dtype: str
    device: str
    preprocessing_version: str
    encoder_notice: str
    index_kind: str
    index_backend: str
    ecg_count: int
    index_entries: int
    limits: Limits
    versions: _containers.ScalarMap[str, str]
    auth_enabled: bool
    tls: bool
    columns: _containers.ScalarMap[str, str]
    index_settings: _containers.ScalarMap[str, str]
    encoder_contract_json: str
    timing: Timing
    def __init__(self, model_id: _Optional[str] = ..., checkpoint_sha256: _Optional[str] = ..., dim: _Optional[int] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., preprocessing_version: _Optional[str] = ..., encoder_notice: _Optional[str] = ..., index_kind: _Optional[str] = ..., index_backend: _Optional[str] = ..., ecg_count: _Optional[int] = ..., index_entries: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., versions: _Optional[_Mapping[str, str]] = ..., auth_enabled: _Optional[bool] = ..., tls: _Optional[bool] = ..., columns: _Optional[_Mapping[str, str]] = ..., index_settings: _Optional[_Mapping[str, str]] = ..., encoder_contract_json: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class TrainProbeRequest(_message.Message):
    __slots__ = ("name", "targets", "filter", "split", "split_fractions", "balanced_class_weight", "n_bootstrap", "seed", "min_positives", "overwrite", "baseline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    BALANCED_CLASS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    N_BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITIVES_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    split: str
    split_fractions: _containers.RepeatedScalarFieldContainer[float]
    balanced_class_weight: bool
    n_bootstrap: int
    seed: int
    min_positives: int
    overwrite: bool
    baseline: bool
    def __init__(self, name: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., split: _Optional[str] = ..., split_fractions: _Optional[_Iterable[float]] = ..., balanced_class_weight: _Optional[bool] = ..., n_bootstrap: _Optional[int] = ..., seed: _Optional[int] = ..., min_positives: _Optional[int] = ..., overwrite: _Optional[bool] = ..., baseline: _Optional[bool] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("value", "ci_low", "ci_high", "resamples_used")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    RESAMPLES_USED_FIELD_NUMBER: _ClassVar[int]
    value: float
    ci_low: float
    ci_high: float
    resamples_used: int
    def __init__(self, value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., resamples_used: _Optional[int] = ...) -> None: ...

class LabelReport(_message.Message):
    __slots__ = ("label", "train_positive", "train_negative", "test_positive", "test_negative", "auroc", "auprc", "c", "flag")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_POSITIVE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    TEST_POSITIVE_FIELD_NUMBER: _ClassVar[int]
    TEST_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    AUROC_FIELD_NUMBER: _ClassVar[int]
    AUPRC_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    label: str
    train_positive: int
    train_negative: int
    test_positive: int
    test_negative: int
    auroc: Estimate
    auprc: Estimate
    c: float
    flag: str
    def __init__(self, label: _Optional[str] = ..., train_positive: _Optional[int] = ..., train_negative: _Optional[int] = ..., test_positive: _Optional[int] = ..., test_negative: _Optional[int] = ..., auroc: _Optional[_Union[Estimate, _Mapping]] = ..., auprc: _Optional[_Union[Estimate, _Mapping]] = ..., c: _Optional[float] = ..., flag: _Optional[str] = ...) -> None: ...

class TrainProbeResponse(_message.Message):
    __slots__ = ("name", "kind", "labels", "macro_auroc", "macro_auprc", "macro_labels", "n_ecgs", "n_patients", "split", "report_json", "timing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MACRO_AUROC_FIELD_NUMBER: _ClassVar[int]
    MACRO_AUPRC_FIELD_NUMBER: _ClassVar[int]
    MACRO_LABELS_FIELD_NUMBER: _ClassVar[int]
    N_ECGS_FIELD_NUMBER: _ClassVar[int]
    N_PATIENTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelReport]
    macro_auroc: Estimate
    macro_auprc: Estimate
    macro_labels: _containers.RepeatedScalarFieldContainer[str]
    n_ecgs: int
    n_patients: int
    split: str
    report_json: str
    timing: Timing
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelReport, _Mapping]]] = ..., macro_auroc: _Optional[_Union[Estimate, _Mapping]] = ..., macro_auprc: _Optional[_Union[Estimate, _Mapping]] = ..., macro_labels: _Optional[_Iterable[str]] = ..., n_ecgs: _Optional[int] = ..., n_patients: _Optional[int] = ..., split: _Optional[str] = ..., report_json: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("probe", "ecg_ids", "ecgs")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    ECG_IDS_FIELD_NUMBER: _ClassVar[int]
    ECGS_FIELD_NUMBER: _ClassVar[int]
    probe: str
    ecg_ids: _containers.RepeatedScalarFieldContainer[str]
    ecgs: _containers.RepeatedCompositeFieldContainer[ECG]
    def __init__(self, probe: _Optional[str] = ..., ecg_ids: _Optional[_Iterable[str]] = ..., ecgs: _Optional[_Iterable[_Union[ECG, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("labels", "keys", "probabilities", "timing")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    keys: _containers.RepeatedScalarFieldContainer[str]
    probabilities: Matrix
    timing: Timing
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., keys: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Union[Matrix, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ClusterRequest(_message.Message):
    __slots__ = ("run", "filter", "label_columns", "colour_by", "n_epochs", "min_cluster_size", "min_samples", "n_neighbors", "pca_dims", "seed", "exemplar_grid", "cluster_dims", "n_exemplars")
    RUN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    COLOUR_BY_FIELD_NUMBER: _ClassVar[int]
    N_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLUSTER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    PCA_DIMS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXEMPLAR_GRID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_DIMS_FIELD_NUMBER: _ClassVar[int]
    N_EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    run: str
    filter: Filter
    label_columns: _containers.RepeatedScalarFieldContainer[str]
    colour_by: _containers.RepeatedScalarFieldContainer[str]
    n_epochs: int
    min_cluster_size: int
    min_samples: int
    n_neighbors: int
    pca_dims: int
    seed: int
    exemplar_grid: bool
    cluster_dims: int
    n_exemplars: int
    def __init__(self, run: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., label_columns: _Optional[_Iterable[str]] = ..., colour_by: _Optional[_Iterable[str]] = ..., n_epochs: _Optional[int] = ..., min_cluster_size: _Optional[int] = ..., min_samples: _Optional[int] = ..., n_neighbors: _Optional[int] = ..., pca_dims: _Optional[int] = ..., seed: _Optional[int] = ..., exemplar_grid: _Optional[bool] = ..., cluster_dims: _Optional[int] = ..., n_exemplars: _Optional[int] = ...) -> None: ...

class ClusterProgress(_message.Message):
    __slots__ = ("stage", "percent")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    stage: str
    percent: float
    def __init__(self, stage: _Optional[str] = ..., percent: _Optional[float] = ...) -> None: ...

class ClusterResult(_message.Message):
    __slots__ = ("run", "n_clusters", "noise", "cluster_sizes", "n_ecgs", "columns", "figures", "enrichment_csv", "enrichment_markdown", "run_json", "timing")
    class ClusterSizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class FiguresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    RUN_FIELD_NUMBER: _ClassVar[int]
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SIZES_FIELD_NUMBER: _ClassVar[int]
    N_ECGS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    ENRICHMENT_CSV_FIELD_NUMBER: _ClassVar[int]
    ENRICHMENT_MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    RUN_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    run: str
    n_clusters: int
    noise: int
    cluster_sizes: _containers.ScalarMap[int, int]
    n_ecgs: int
    columns: _containers.RepeatedScalarFieldContainer[str]
    figures: _containers.ScalarMap[str, bytes]
    enrichment_csv: str
    enrichment_markdown: str
    run_json: str
    timing: Timing
    def __init__(self, run: _Optional[str] = ..., n_clusters: _Optional[int] = ..., noise: _Optional[int] = ..., cluster_sizes: _Optional[_Mapping[int, int]] = ..., n_ecgs: _Optional[int] = ..., columns: _Optional[_Iterable[str]] = ..., figures: _Optional[_Mapping[str, bytes]] = ..., enrichment_csv: _Optional[str] = ..., enrichment_markdown: _Optional[str] = ..., run_json: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ClusterResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: ClusterProgress
    result: ClusterResult
    def __init__(self, progress: _Optional[_Union[ClusterProgress, _Mapping]] = ..., result: _Optional[_Union[ClusterResult, _Mapping]] = ...) -> None: ...

class ListClusterRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterRunSummary(_message.Message):
    __slots__ = ("run", "n_ecgs", "n_clusters", "created_at", "where")
    RUN_FIELD_NUMBER: _ClassVar[int]
    N_ECGS_FIELD_NUMBER: _ClassVar[int]
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    run: str
    n_ecgs: int
    n_clusters: int
    created_at: str
    where: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run: _Optional[str] = ..., n_ecgs: _Optional[int] = ..., n_clusters: _Optional[int] = ..., created_at: _Optional[str] = ..., where: _Optional[_Iterable[str]] = ...) -> None: ...

class ListClusterRunsResponse(_message.Message):
    __slots__ = ("runs", "timing")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[ClusterRunSummary]
    timing: Timing
    def __init__(self, runs: _Optional[_Iterable[_Union[ClusterRunSummary, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class GetClusterRunRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: str
    def __init__(self, run: _Optional[str] = ...) -> None: ...

class GetClusterRunResponse(_message.Message):
    __slots__ = ("run", "assignments_arrow", "enrichment_csv", "run_json", "timing")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_ARROW_FIELD_NUMBER: _ClassVar[int]
    ENRICHMENT_CSV_FIELD_NUMBER: _ClassVar[int]
    RUN_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    run: str
    assignments_arrow: bytes
    enrichment_csv: str
    run_json: str
    timing: Timing
    def __init__(self, run: _Optional[str] = ..., assignments_arrow: _Optional[bytes] = ..., enrichment_csv: _Optional[str] = ..., run_json: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("ecg_id", "ecg", "include_png", "lead", "single_lead")
    ECG_ID_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PNG_FIELD_NUMBER: _ClassVar[int]
    LEAD_FIELD_NUMBER: _ClassVar[int]
    SINGLE_LEAD_FIELD_NUMBER: _ClassVar[int]
    ecg_id: str
    ecg: ECG
    include_png: bool
    lead: str
    single_lead: bool
    def __init__(self, ecg_id: _Optional[str] = ..., ecg: _Optional[_Union[ECG, _Mapping]] = ..., include_png: _Optional[bool] = ..., lead: _Optional[str] = ..., single_lead: _Optional[bool] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("saliency", "segment_saliency", "png", "model_id", "timing")
    SALIENCY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SALIENCY_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    saliency: Vector
    segment_saliency: Matrix
    png: bytes
    model_id: str
    timing: Timing
    def __init__(self, saliency: _Optional[_Union[Vector, _Mapping]] = ..., segment_saliency: _Optional[_Union[Matrix, _Mapping]] = ..., png: _Optional[bytes] = ..., model_id: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ListProbesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeSummary(_message.Message):
    __slots__ = ("name", "kind", "labels", "model_id", "created_at", "macro_auroc", "where", "report_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MACRO_AUROC_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    model_id: str
    created_at: str
    macro_auroc: float
    where: _containers.RepeatedScalarFieldContainer[str]
    report_json: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., model_id: _Optional[str] = ..., created_at: _Optional[str] = ..., macro_auroc: _Optional[float] = ..., where: _Optional[_Iterable[str]] = ..., report_json: _Optional[str] = ...) -> None: ...

class ListProbesResponse(_message.Message):
    __slots__ = ("probes", "timing")
    PROBES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[ProbeSummary]
    timing: Timing
    def __init__(self, probes: _Optional[_Iterable[_Union[ProbeSummary, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class EvaluateProbeRequest(_message.Message):
    __slots__ = ("name", "filter", "n_bootstrap", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    N_BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    filter: Filter
    n_bootstrap: int
    seed: int
    def __init__(self, name: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., n_bootstrap: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluateProbeResponse(_message.Message):
    __slots__ = ("name", "labels", "macro_auroc", "macro_auprc", "macro_labels", "n_ecgs", "n_left_out", "timing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MACRO_AUROC_FIELD_NUMBER: _ClassVar[int]
    MACRO_AUPRC_FIELD_NUMBER: _ClassVar[int]
    MACRO_LABELS_FIELD_NUMBER: _ClassVar[int]
    N_ECGS_FIELD_NUMBER: _ClassVar[int]
    N_LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelReport]
    macro_auroc: Estimate
    macro_auprc: Estimate
    macro_labels: _containers.RepeatedScalarFieldContainer[str]
    n_ecgs: int
    n_left_out: int
    timing: Timing
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelReport, _Mapping]]] = ..., macro_auroc: _Optional[_Union[Estimate, _Mapping]] = ..., macro_auprc: _Optional[_Union[Estimate, _Mapping]] = ..., macro_labels: _Optional[_Iterable[str]] = ..., n_ecgs: _Optional[int] = ..., n_left_out: _Optional[int] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("filter", "columns", "include_vectors")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    columns: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., columns: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("arrow_ipc", "timing")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    timing: Timing
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class SuggestIdsRequest(_message.Message):
    __slots__ = ("prefix", "limit")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SuggestIdsResponse(_message.Message):
    __slots__ = ("ecg_ids", "timing")
    ECG_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    ecg_ids: _containers.RepeatedScalarFieldContainer[str]
    timing: Timing
    def __init__(self, ecg_ids: _Optional[_Iterable[str]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ImportRequest(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shards: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportResponse(_message.Message):
    __slots__ = ("inserted", "skipped_existing", "refused", "files", "refusals", "timing")
    class RefusalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_EXISTING_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    skipped_existing: int
    refused: int
    files: int
    refusals: _containers.ScalarMap[str, int]
    timing: Timing
    def __init__(self, inserted: _Optional[int] = ..., skipped_existing: _Optional[int] = ..., refused: _Optional[int] = ..., files: _Optional[int] = ..., refusals: _Optional[_Mapping[str, int]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...
