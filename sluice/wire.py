"""gRPC metadata names of the wire contract, shared by the gateway and the client SDK."""

# Request metadata every call carries.
AUTHORIZATION = "authorization"  # "Bearer <JWT>"
ACCESS_KEY = "x-access-key"

# Trailing metadata of a failed send: envelopes stored (acknowledged by Kafka) before the failure.
ACCEPTED = "x-accepted"

# Trailing metadata of a RESOURCE_EXHAUSTED or UNAVAILABLE answer: seconds to wait before retrying.
RETRY_AFTER = "retry-after"
