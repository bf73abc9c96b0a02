"""An independent OAuth 2.0 client (Authlib) driving Bridgehead's built-in authorization server.

Usage: authlib_client.py BASE_URL CONFIDENTIAL_ID CONFIDENTIAL_SECRET PUBLIC_ID REDIRECT_URI USER PASSWORD
Prints one JSON object with what each flow returned; the Rust test asserts on it.
"""

import json
import os
import re
import sys
from urllib.parse import parse_qs, urlparse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # the test server listens on plain http://127.0.0.1

base, cid, secret, public_id, redirect_uri, user, password = sys.argv[1:8]
token_url = f"{base}/oauth2/token"
out = {}

# Discovery (RFC 8414).
meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
out["metadata_grants"] = meta["grant_types_supported"]

# Client credentials, client_secret_basic.
svc = OAuth2Session(cid, secret, scope="orders.read", token_endpoint_auth_method="client_secret_basic")
token = svc.fetch_token(token_url, grant_type="client_credentials")
out["cc_basic"] = {"token_type": token["token_type"], "scope": token.get("scope"), "expires_in": token["expires_in"]}
cc_access = token["access_token"]

# Client credentials, client_secret_post.
post = OAuth2Session(cid, secret, token_endpoint_auth_method="client_secret_post")
out["cc_post_scope"] = post.fetch_token(token_url, grant_type="client_credentials").get("scope")

# Introspection and revocation (RFC 7662, RFC 7009).
intro = svc.introspect_token(meta["introspection_endpoint"].replace(meta["issuer"], base), token=cc_access)
out["introspect_active"] = intro.json()["active"]
svc.revoke_token(meta["revocation_endpoint"].replace(meta["issuer"], base), token=cc_access)
intro = svc.introspect_token(f"{base}/oauth2/introspect", token=cc_access)
out["introspect_after_revoke"] = intro.json()

# Authorization code with PKCE S256, the login form filled in like a browser would.
verifier = generate_token(64)
console = OAuth2Session(public_id, redirect_uri=redirect_uri, scope="orders.read",
                        code_challenge_method="S256", token_endpoint_auth_method="none")
uri, state = console.create_authorization_url(f"{base}/oauth2/authorize", code_verifier=verifier)
page = requests.get(uri, timeout=10)
fields = dict(re.findall(r'<input type=hidden name="([^"]+)" value="([^"]*)">', page.text))
fields.update({"username": user, "password": password, "decision": "approve"})
answer = requests.post(f"{base}/oauth2/authorize", data=fields, allow_redirects=False, timeout=10)
location = answer.headers["Location"]
query = parse_qs(urlparse(location).query)
out["redirect_status"] = answer.status_code
out["state_round_trip"] = query["state"][0] == state
out["iss"] = query["iss"][0]
token = console.fetch_token(token_url, authorization_response=location, code_verifier=verifier)
out["code_token_has_refresh"] = "refresh_token" in token
first_refresh = token["refresh_token"]

# Refresh with rotation.
refreshed = console.refresh_token(token_url, refresh_token=first_refresh)
out["rotated"] = refreshed["refresh_token"] != first_refresh
# Reusing the old refresh token is refused, and revokes the family.
reuse = requests.post(token_url, data={"grant_type": "refresh_token", "refresh_token": first_refresh,
                                       "client_id": public_id}, timeout=10)
out["reuse"] = {"status": reuse.status_code, "error": reuse.json().get("error")}
after = requests.post(token_url, data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"],
                                       "client_id": public_id}, timeout=10)
out["family_revoked"] = after.json().get("error")

print(json.dumps(out))
