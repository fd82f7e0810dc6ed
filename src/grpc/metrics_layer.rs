//! gRPC metrics for every method: the static labels calls are counted
//! under, and the code a response carries. `dispatch` counts each call
//! when its response headers are ready (the whole call for unary methods;
//! the first message for streams).

/// The methods tokend serves, as static metric labels.
const METHODS: [&str; 18] = [
    "GetHeaders",
    "WatchHeaders",
    "Invalidate",
    "ListCredentials",
    "ListAlerts",
    "WhoAmI",
    "Refresh",
    "PutRefreshToken",
    "ImportSecret",
    "BeginLogin",
    "CompleteLogin",
    "Logout",
    "TestAlert",
    "Reload",
    "Check",
    "Watch",
    "ServerReflectionInfo",
    "other",
];

/// The label for a request path: one of [`METHODS`]. A local client
/// sending junk paths must not grow the metric set without bound.
pub(super) fn method_label(path: &str) -> &'static str {
    let known = ["/tokend.v1.", "/grpc.health.v1.", "/grpc.reflection."];
    let name = path.rsplit('/').next().unwrap_or("");
    match METHODS.iter().find(|m| **m == name) {
        Some(m) if known.iter().any(|p| path.starts_with(p)) => m,
        _ => "other",
    }
}

/// A response's gRPC code: the `grpc-status` of a trailers-only (error)
/// response, else OK.
pub(super) fn grpc_code(headers: &http::HeaderMap) -> tonic::Code {
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}
