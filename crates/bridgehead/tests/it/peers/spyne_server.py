"""An independent SOAP server for the gateway's tests: Python spyne on wsgiref.

Usage: spyne_server.py [--soap 11|12] [--bare] [--username U --password P]

Serves the service Billing (namespace urn:bridgehead:test:billing) over SOAP 1.1 (default) or
SOAP 1.2 (--soap 12) on 127.0.0.1, one thread per request; the WSDL is at GET /?wsdl and the
endpoint is POST /. Prints "port N" and serves until stdin closes.

Operations, document/literal wrapped (request element OPERATION, response element
OPERATIONResponse holding OPERATIONResult, all elements qualified in the target namespace):
  GetInvoice(invoice_id)                  -> Invoice; an unknown id is a fault Client.NotFound
                                             with detail <NotFound><invoice_id>ID</invoice_id></NotFound>
  ListInvoices(status?, since?)           -> InvoiceArray (Invoice*), sorted by id, issued >= since
  CreateInvoice(customer, lines, due?, note?) -> Invoice, stored in memory as inv-3, inv-4, ...
                                             (status draft, issued 2024-06-01, total = sum of
                                             quantity * price, paid false)
  Fail(reason)                            -> always a fault Server with faultstring REASON, no detail
  LastRequest()                           -> JSON text {"soapaction", "content_type", "method",
                                             "path", "envelope"} describing the request received
                                             before this one (null fields when there was none);
                                             never asks for credentials

Every fault is HTTP 500 (SOAP 1.2 too); SOAP 1.2 fault codes become Code Sender / Receiver with
the rest of the dotted code as an unqualified Subcode Value ("NotFound"). A request is dispatched
by its Body's element, SOAPAction is not looked at. Requests are validated against the schema
(spyne's lxml validator): wrong, unqualified or misordered elements are a fault
Client.SchemaValidationError. An empty Body is answered by this peer itself with a fault
Client.EmptyBody (SOAP 1.2: Sender), spyne having no answer to it. A request body needs a
Content-Length (wsgiref reads no chunked body). Answers are HTTP/1.0 and the connection closes
after each. Absent optional values are left out of answers, except Invoice/note, always sent and
xsi:nil="true" when there is none; an empty array is an empty wrapper (<lines/>).

--bare makes GetInvoice and Fail document/literal bare (the request element is the single part:
<GetInvoice>ID</GetInvoice>, the response <GetInvoiceResponse> is the Invoice itself); spyne
can make bare only an operation with one argument, so the others stay wrapped.

With --username and --password every operation but LastRequest wants a WS-Security
UsernameToken in the SOAP header: PasswordText, or PasswordDigest = Base64(SHA-1(nonce bytes +
Created + password)). A missing or wrong token, a Created more than 5 minutes away from now or a
Nonce seen before is a fault Client.Authentication.

Seeded invoices:
  inv-1  Ada Lovelace <ada@example.com>, paid, issued 2024-01-15, due 2024-02-15,
         lines sku-1 x2 at 4.50 and sku-2 x1 at 12.00, total 21.00, paid true, note "thank you"
  inv-2  Grace Hopper (no email), sent, issued 2024-03-01, no due,
         line sku-3 x10 at 0.99, total 9.90, paid false, no note
"""

import argparse
import base64
import datetime
import decimal
import hashlib
import hmac
import io
import json
import logging
import os
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lxml import etree
from spyne import (
    Application,
    Array,
    Boolean,
    ComplexModel,
    Date,
    Decimal,
    Enum,
    Fault,
    Integer,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.wsgi import WsgiApplication

TNS = "urn:bridgehead:test:billing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
ISSUED_ON_CREATE = datetime.date(2024, 6, 1)
FRESHNESS = datetime.timedelta(minutes=5)

Status = Enum("draft", "sent", "paid", type_name="Status", __namespace__=TNS)


class Customer(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("name", Unicode(min_occurs=1, nillable=False)),
        ("email", Unicode(min_occurs=0)),
    ]


class Line(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("sku", Unicode),
        ("quantity", Integer),
        ("price", Decimal),
    ]


class Invoice(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("id", Unicode),
        ("customer", Customer),
        ("status", Status),
        ("issued", Date),
        ("due", Date(min_occurs=0)),
        ("lines", Array(Line)),
        ("total", Decimal),
        ("paid", Boolean),
        ("note", Unicode(min_occurs=1, nillable=True)),  # always sent, xsi:nil="true" when none
    ]


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.invoices = {}
        self.next_id = 1
        self.add(
            Customer(name="Ada Lovelace", email="ada@example.com"),
            [Line(sku="sku-1", quantity=2, price=decimal.Decimal("4.50")), Line(sku="sku-2", quantity=1, price=decimal.Decimal("12.00"))],
            status="paid", issued=datetime.date(2024, 1, 15), due=datetime.date(2024, 2, 15), paid=True, note="thank you",
        )
        self.add(
            Customer(name="Grace Hopper"),
            [Line(sku="sku-3", quantity=10, price=decimal.Decimal("0.99"))],
            status="sent", issued=datetime.date(2024, 3, 1), due=None, paid=False, note=None,
        )

    def add(self, customer, lines, status, issued, due, paid, note):
        lines = list(lines or [])
        total = sum((decimal.Decimal(l.quantity or 0) * (l.price or 0) for l in lines), decimal.Decimal("0.00"))
        with self.lock:
            invoice = Invoice(
                id="inv-%d" % self.next_id, customer=customer, status=status, issued=issued, due=due,
                lines=lines, total=total, paid=paid, note=note,
            )
            self.invoices[invoice.id] = invoice
            self.next_id += 1
        return invoice

    def get(self, invoice_id):
        with self.lock:
            return self.invoices.get(invoice_id)

    def all(self):
        with self.lock:
            return [self.invoices[k] for k in sorted(self.invoices, key=lambda k: int(k.split("-")[1]))]


STORE = Store()


def make_service(bare):
    style = {"_body_style": "bare"} if bare else {}

    class BillingService(ServiceBase):
        __service_name__ = "Billing"

        @rpc(Unicode(min_occurs=1, nillable=False), _returns=Invoice, **style)
        def GetInvoice(ctx, invoice_id):
            invoice = STORE.get(invoice_id)
            if invoice is None:
                raise Fault(
                    faultcode="Client.NotFound",
                    faultstring="no invoice %s" % invoice_id,
                    detail={"NotFound": {"invoice_id": invoice_id}},
                )
            return invoice

        @rpc(Status(min_occurs=0), Date(min_occurs=0), _returns=Array(Invoice))
        def ListInvoices(ctx, status, since):
            return [
                i for i in STORE.all()
                if (status is None or i.status == str(status)) and (since is None or i.issued >= since)
            ]

        @rpc(Customer.customize(min_occurs=1, nillable=False), Array(Line), Date(min_occurs=0), Unicode(min_occurs=0), _returns=Invoice)
        def CreateInvoice(ctx, customer, lines, due, note):
            return STORE.add(customer, lines, "draft", ISSUED_ON_CREATE, due, False, note)

        @rpc(Unicode, _returns=Unicode, **style)
        def Fail(ctx, reason):
            raise Fault(faultcode="Server", faultstring=reason or "failed")

        @rpc(_returns=Unicode)
        def LastRequest(ctx):
            return json.dumps(ctx.transport.req_env["bridgehead.previous_request"])

    return BillingService


class Authenticator:
    """Checks the WS-Security UsernameToken of a request by hand (spyne has no WS-Security)."""

    def __init__(self, username, password):
        self.username = username
        self.password = password
        self.nonces = set()
        self.lock = threading.Lock()

    def __call__(self, ctx):
        if ctx.descriptor.name == "LastRequest":
            return
        try:
            self.check(ctx.in_header_doc or [])
        except ValueError as e:
            raise Fault(faultcode="Client.Authentication", faultstring=str(e))

    def check(self, headers):
        security = next((h for h in headers if h.tag == "{%s}Security" % WSSE), None)
        if security is None:
            raise ValueError("no WS-Security header")
        token = security.find("{%s}UsernameToken" % WSSE)
        if token is None:
            raise ValueError("no UsernameToken")
        username = token.findtext("{%s}Username" % WSSE)
        password = token.find("{%s}Password" % WSSE)
        nonce = token.findtext("{%s}Nonce" % WSSE)
        created = token.findtext("{%s}Created" % WSU)
        if username is None or password is None:
            raise ValueError("no Username or Password")
        if created is not None:
            try:
                when = datetime.datetime.fromisoformat(created.strip())
            except ValueError:
                raise ValueError("bad Created")
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            if abs(datetime.datetime.now(datetime.timezone.utc) - when) > FRESHNESS:
                raise ValueError("Created is not within 5 minutes")
        kind = (password.get("Type") or "#PasswordText").rsplit("#", 1)[-1]
        given = (password.text or "").strip()
        if kind == "PasswordText":
            ok = hmac.compare_digest(given.encode(), self.password.encode())
        elif kind == "PasswordDigest":
            if nonce is None or created is None:
                raise ValueError("PasswordDigest without Nonce or Created")
            try:
                raw = base64.b64decode(nonce.strip(), validate=True)
            except ValueError:
                raise ValueError("bad Nonce")
            want = base64.b64encode(hashlib.sha1(raw + created.strip().encode() + self.password.encode()).digest())
            ok = hmac.compare_digest(given.encode(), want)
        else:
            raise ValueError("unknown Password Type %s" % password.get("Type"))
        if not ok or username.strip() != self.username:
            raise ValueError("wrong username or password")
        if nonce is not None:
            with self.lock:
                if nonce.strip() in self.nonces:
                    raise ValueError("Nonce seen before")
                self.nonces.add(nonce.strip())


def empty_body_fault(body):
    """The SOAP version of an envelope whose Body is empty, which spyne does not survive, else None."""
    try:
        envelope = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    for version, ns in (("11", SOAP11_ENV), ("12", SOAP12_ENV)):
        if envelope.tag == "{%s}Envelope" % ns:
            soap_body = envelope.find("{%s}Body" % ns)
            if soap_body is not None and len(soap_body) == 0:
                return version
    return None


EMPTY_BODY_FAULT = {
    "11": (
        "text/xml; charset=utf-8",
        '<?xml version="1.0" encoding="UTF-8"?>\n<soap11env:Envelope xmlns:soap11env="%s"><soap11env:Body>'
        "<soap11env:Fault><faultcode>soap11env:Client.EmptyBody</faultcode><faultstring>empty SOAP Body</faultstring>"
        "</soap11env:Fault></soap11env:Body></soap11env:Envelope>" % SOAP11_ENV,
    ),
    "12": (
        "application/soap+xml; charset=utf-8",
        '<?xml version="1.0" encoding="UTF-8"?>\n<soap12env:Envelope xmlns:soap12env="%s"><soap12env:Body>'
        "<soap12env:Fault><soap12env:Code><soap12env:Value>soap12env:Sender</soap12env:Value></soap12env:Code>"
        '<soap12env:Reason><soap12env:Text xml:lang="en">empty SOAP Body</soap12env:Text></soap12env:Reason>'
        "</soap12env:Fault></soap12env:Body></soap12env:Envelope>" % SOAP12_ENV,
    ),
}


class Recorder:
    """WSGI middleware: remembers each POST's headers and body, hands the previous one to LastRequest;
    answers an empty SOAP Body with a fault itself (spyne would fail with an AttributeError)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.previous = {"soapaction": None, "content_type": None, "method": None, "path": None, "envelope": None}

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            current = {
                "soapaction": environ.get("HTTP_SOAPACTION"),
                "content_type": environ.get("CONTENT_TYPE"),
                "method": environ["REQUEST_METHOD"],
                "path": environ.get("PATH_INFO"),
                "envelope": body.decode("utf-8", "replace"),
            }
            with self.lock:
                environ["bridgehead.previous_request"] = self.previous
                self.previous = current
            version = empty_body_fault(body)
            if version is not None:
                content_type, fault = EMPTY_BODY_FAULT[version]
                fault = fault.encode()
                start_response(
                    "500 Internal Server Error", [("Content-Type", content_type), ("Content-Length", str(len(fault)))]
                )
                return [fault]
        return self.app(environ, start_response)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description="Billing SOAP test peer")
    parser.add_argument("--soap", choices=["11", "12"], default="11")
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args()
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")

    # Faults are answers here, not errors worth a traceback on stderr.
    logging.getLogger("spyne").setLevel(logging.CRITICAL)

    protocol = Soap12 if args.soap == "12" else Soap11
    app = Application(
        [make_service(args.bare)],
        tns=TNS,
        name="Billing",
        in_protocol=protocol(validator="lxml"),
        out_protocol=protocol(),
    )
    if args.username is not None:
        app.event_manager.add_listener("method_call", Authenticator(args.username, args.password))

    server = make_server(
        "127.0.0.1", 0, Recorder(WsgiApplication(app)), server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("port", server.server_port, flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
