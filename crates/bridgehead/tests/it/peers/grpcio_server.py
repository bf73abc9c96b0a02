"""An independent gRPC server for the gateway's tests: Python grpcio with grpcio-reflection.

Usage: grpcio_server.py DESCRIPTOR_SET

Loads the descriptor set (built by protoc with --include_imports) into the protobuf runtime's
default pool, serves inventory.v1.Inventory (GetItem, ListItems server streaming, a failing
method), enables server reflection (grpcio-reflection, which serves only v1alpha), prints
"port N" and serves until stdin closes.
"""

import sys
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection

SERVICE = "inventory.v1.Inventory"


def main():
    fds = descriptor_pb2.FileDescriptorSet()
    with open(sys.argv[1], "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.Default()
    for file in fds.file:
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.Add(file)
    cls = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    GetItemRequest, Item, ListItemsRequest = cls("inventory.v1.GetItemRequest"), cls("inventory.v1.Item"), cls("inventory.v1.ListItemsRequest")
    items = {
        "sku-1": {"sku": "sku-1", "name": "rotor", "quantity": "12", "price": {"units": "4", "currency": "EUR"}},
        "sku-2": {"sku": "sku-2", "name": "battery", "quantity": "3"},
    }

    def get_item(request, context):
        if request.sku not in items:
            context.abort(grpc.StatusCode.NOT_FOUND, "no item " + request.sku)
        return json_format.ParseDict(items[request.sku], Item())

    def list_items(request, context):
        for sku in sorted(items):
            if request.min_quantity <= int(items[sku]["quantity"]):
                yield json_format.ParseDict(items[sku], Item())

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetItem": grpc.unary_unary_rpc_method_handler(
                get_item, request_deserializer=GetItemRequest.FromString, response_serializer=Item.SerializeToString
            ),
            "ListItems": grpc.unary_stream_rpc_method_handler(
                list_items, request_deserializer=ListItemsRequest.FromString, response_serializer=Item.SerializeToString
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port", port, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
