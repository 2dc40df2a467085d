"""The API layer: etcd v3 gRPC services, the JSON gateway, the native door and the wire contract."""
