//! The JetStream API's errors, with nats-server 2.9.10's codes and texts.

use serde::Serialize;

/// An error as the API returns it: `{"code":404,"err_code":10059,"description":"stream not found"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{description} ({err_code})")]
pub struct ApiError {
    /// HTTP-like status.
    pub code: u16,
    /// JetStream's own error code.
    pub err_code: u16,
    /// What went wrong.
    pub description: String,
}

impl ApiError {
    /// An error with these codes and text.
    pub fn new(code: u16, err_code: u16, description: impl Into<String>) -> Self {
        ApiError { code, err_code, description: description.into() }
    }

    /// 10003.
    pub fn bad_request() -> Self {
        Self::new(400, 10003, "bad request")
    }
    /// 10012.
    pub fn consumer_create(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10012, err.to_string())
    }
    /// 10014.
    pub fn consumer_not_found() -> Self {
        Self::new(404, 10014, "consumer not found")
    }
    /// 10023.
    pub fn insufficient_resources() -> Self {
        Self::new(503, 10023, "insufficient resources")
    }
    /// 10025.
    pub fn invalid_json() -> Self {
        Self::new(400, 10025, "invalid JSON")
    }
    /// 10027.
    pub fn maximum_streams() -> Self {
        Self::new(400, 10027, "maximum number of streams reached")
    }
    /// 10028.
    pub fn memory_resources_exceeded() -> Self {
        Self::new(500, 10028, "insufficient memory resources available")
    }
    /// 10037.
    pub fn no_message_found() -> Self {
        Self::new(404, 10037, "no message found")
    }
    /// 10038.
    pub fn not_empty_request() -> Self {
        Self::new(400, 10038, "expected an empty request payload")
    }
    /// 10039.
    pub fn not_enabled_for_account() -> Self {
        Self::new(503, 10039, "JetStream not enabled for account")
    }
    /// 10043.
    pub fn sequence_not_found(seq: u64) -> Self {
        Self::new(400, 10043, format!("sequence {seq} not found"))
    }
    /// 10047.
    pub fn storage_resources_exceeded() -> Self {
        Self::new(500, 10047, "insufficient storage resources available")
    }
    /// 10049.
    pub fn stream_create(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10049, err.to_string())
    }
    /// 10050.
    pub fn stream_delete(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10050, err.to_string())
    }
    /// 10051.
    pub fn stream_general(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10051, err.to_string())
    }
    /// 10052.
    pub fn invalid_config(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10052, err.to_string())
    }
    /// 10054.
    pub fn message_exceeds_maximum() -> Self {
        Self::new(400, 10054, "message size exceeds maximum allowed")
    }
    /// 10056.
    pub fn stream_mismatch() -> Self {
        Self::new(400, 10056, "stream name in subject does not match request")
    }
    /// 10057.
    pub fn msg_delete_failed(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10057, err.to_string())
    }
    /// 10058.
    pub fn stream_name_exists() -> Self {
        Self::new(400, 10058, "stream name already in use with a different configuration")
    }
    /// 10059.
    pub fn stream_not_found() -> Self {
        Self::new(404, 10059, "stream not found")
    }
    /// 10060.
    pub fn stream_not_match() -> Self {
        Self::new(400, 10060, "expected stream does not match")
    }
    /// 10065.
    pub fn subject_overlap() -> Self {
        Self::new(400, 10065, "subjects overlap with an existing stream")
    }
    /// 10069.
    pub fn stream_update(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10069, err.to_string())
    }
    /// 10070.
    pub fn wrong_last_msg_id(id: &str) -> Self {
        Self::new(400, 10070, format!("wrong last msg ID: {id}"))
    }
    /// 10071.
    pub fn wrong_last_sequence(seq: u64) -> Self {
        Self::new(400, 10071, format!("wrong last sequence: {seq}"))
    }
    /// 10074.
    pub fn replicas_not_supported() -> Self {
        Self::new(500, 10074, "replicas > 1 not supported in non-clustered mode")
    }
    /// 10077.
    pub fn store_failed(err: impl std::fmt::Display) -> Self {
        Self::new(503, 10077, err.to_string())
    }
    /// 10097.
    pub fn header_exceeds_maximum() -> Self {
        Self::new(400, 10097, "header size exceeds maximum allowed of 64k")
    }
    /// 10109.
    pub fn stream_sealed() -> Self {
        Self::new(400, 10109, "invalid operation on sealed stream")
    }
    /// 10110.
    pub fn purge_failed(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10110, err.to_string())
    }
    /// 10111.
    pub fn rollup_failed(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10111, err.to_string())
    }
    /// 10128.
    pub fn name_contains_path_separators() -> Self {
        Self::new(400, 10128, "Stream name can not contain path separators")
    }
    /// 10133.
    pub fn replicas_negative() -> Self {
        Self::new(400, 10133, "replicas count cannot be negative")
    }
    /// 10094.
    pub fn consumer_invalid_policy(err: impl std::fmt::Display) -> Self {
        Self::new(400, 10094, err.to_string())
    }
}
