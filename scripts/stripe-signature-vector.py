#!/usr/bin/env python3
"""Prints the Stripe-Signature header Stripe's own library makes for the fixed test vector in
src/billing/signature.rs, so our HMAC input can be checked against theirs.

    python3 -m venv /tmp/stripe-venv && /tmp/stripe-venv/bin/pip install stripe
    /tmp/stripe-venv/bin/python scripts/stripe-signature-vector.py
"""
import stripe

SECRET = "whsec_aideTestVectorSecret0123456789"
T = 1764400000
PAYLOAD = '{"id":"evt_vector_1","object":"event","type":"customer.subscription.updated","api_version":"2026-10-28.endive","created":1764400000,"data":{"object":{"id":"sub_vector","object":"subscription","customer":"cus_vector","status":"active"}}}'

header = stripe.WebhookSignature.generate_signature_header(PAYLOAD, SECRET, timestamp=T)
stripe.WebhookSignature.verify_header(PAYLOAD, header, SECRET, tolerance=None)
print(f"stripe {stripe.VERSION} (API {stripe.api_version}): {header}")
