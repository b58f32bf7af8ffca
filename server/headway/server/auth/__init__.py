"""Who is calling: principals, their roles and tenants, and how a call proves it.

Transport-neutral on purpose: the gRPC guard and any other face of the service
turn what arrived (an `authorization` header, a client certificate) into
`Credentials`, ask an `Authenticator` for the `Principal`, and check the
principal's `Permission` for the call with `authorize`. Nothing here imports grpc.
"""
