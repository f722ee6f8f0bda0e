//! A local stand-in for Stripe's API, stateful and strict the way Stripe is: it checks every
//! request (the Bearer test key, the pinned `Stripe-Version`, form encoding with bracketed keys,
//! known parameters only, an `Idempotency-Key` on every POST), keeps customers, subscriptions and
//! Checkout Sessions across calls, replays idempotent requests (a key reused with another body
//! is refused), and can fail on demand. Test hooks complete a checkout or change a subscription
//! and return the events Stripe would send, which [`StripeStub::signed`] signs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const SECRET_KEY: &str = "sk_test_aideStandIn0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_aideStandInSigningSecret";
pub const PRICE: &str = "price_aidePro";

/// A subscription as the stand-in keeps it.
#[derive(Debug, Clone)]
pub struct Sub {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub created: i64,
    pub cancel_at_period_end: bool,
    pub period_end: i64,
    pub price: String,
}

impl Sub {
    fn object(&self) -> Value {
        json!({
            "id": self.id, "object": "subscription", "customer": self.customer,
            "status": self.status, "created": self.created,
            "cancel_at_period_end": self.cancel_at_period_end, "cancel_at": null,
            "metadata": {},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_{}", &self.id[4..]), "object": "subscription_item",
                "price": {"id": self.price, "object": "price"},
                "current_period_start": self.period_end - 30 * 86_400,
                "current_period_end": self.period_end,
            }]}
        })
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    customers: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Sub>,
    sessions: BTreeMap<String, Value>,
    /// (method, path, key) → (the request's form, status, answer).
    idempotent: HashMap<(String, String, String), (String, u16, Value)>,
    /// Answers to give first, each (status, Retry-After, Stripe-Should-Retry).
    script: VecDeque<(u16, Option<u64>, Option<bool>)>,
    /// Perform the next POST but answer it 500, as when an answer is lost on the way.
    lose_next_answer: bool,
    /// Requests still to hold this long before answering (a timeout).
    stalls: Vec<std::time::Duration>,
    /// Answer the next request 409 `idempotency_key_in_use`, as when another server's request
    /// with the same key is still running.
    key_in_use_next: bool,
    down: bool,
    portal_configured: bool,
    /// Problems with requests: any entry fails the test that reads it.
    problems: Vec<String>,
    /// Every request: (method, path).
    requests: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct StripeStub {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

fn error(status: u16, kind: &str, message: &str, param: Option<&str>) -> Response {
    let mut body = json!({"error": {"type": kind, "message": message}});
    if let Some(param) = param {
        body["error"]["param"] = json!(param);
    }
    (
        StatusCode::from_u16(status).expect("status"),
        [("request-id", "req_stub")],
        axum::Json(body),
    )
        .into_response()
}

/// Parses a form with Stripe's bracketed keys (`a[b][0]=v`) into nested objects.
pub fn parse_form(raw: &str) -> Result<Value, String> {
    let mut root = json!({});
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let mut parts: Vec<String> = Vec::new();
        let (head, rest) = match key.find('[') {
            Some(i) => (&key[..i], &key[i..]),
            None => (&key[..], ""),
        };
        parts.push(head.to_string());
        let mut rest = rest;
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped
                .find(']')
                .ok_or_else(|| format!("unbalanced brackets in {key}"))?;
            parts.push(stripped[..end].to_string());
            rest = &stripped[end + 1..];
        }
        if !rest.is_empty() {
            return Err(format!("bad key {key}"));
        }
        let mut at = &mut root;
        for (i, part) in parts.iter().enumerate() {
            if i == parts.len() - 1 {
                at[part.as_str()] = json!(value.to_string());
            } else {
                if at.get(part.as_str()).is_none() {
                    at[part.as_str()] = json!({});
                }
                at = &mut at[part.as_str()];
            }
        }
    }
    Ok(root)
}

impl StripeStub {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            portal_configured: true,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/v1/customers", post(handle))
            .route("/v1/customers/{id}", axum::routing::delete(handle_id))
            .route("/v1/checkout/sessions", post(handle))
            .route("/v1/checkout/sessions/{id}", get(handle_id))
            .route("/v1/billing_portal/sessions", post(handle))
            .route("/v1/subscriptions", get(handle))
            .route("/v1/subscriptions/{id}", axum::routing::delete(handle_id))
            .fallback(|method: Method, uri: axum::http::Uri| async move {
                error(
                    404,
                    "invalid_request_error",
                    &format!("Unrecognized request URL ({method}: {})", uri.path()),
                    None,
                )
            })
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StripeStub { inner, url }
    }

    /// The variables that point an app at this stand-in.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STRIPE_SECRET_KEY", SECRET_KEY.to_string()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
            ("STRIPE_PRICE_ID", PRICE.to_string()),
            ("STRIPE_API_URL", self.url.clone()),
        ]
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("lock"))
    }

    /// The next answers, before any request is looked at.
    pub fn script(&self, answers: &[(u16, Option<u64>, Option<bool>)]) {
        self.with(|i| i.script.extend(answers.iter().copied()));
    }

    pub fn lose_next_answer(&self) {
        self.with(|i| i.lose_next_answer = true);
    }

    /// The next `count` requests wait `wait` before they are looked at.
    pub fn stall_next(&self, count: usize, wait: std::time::Duration) {
        self.with(|i| i.stalls.extend(std::iter::repeat_n(wait, count)));
    }

    pub fn key_in_use_next(&self) {
        self.with(|i| i.key_in_use_next = true);
    }

    pub fn set_down(&self, down: bool) {
        self.with(|i| i.down = down);
    }

    pub fn set_portal_configured(&self, on: bool) {
        self.with(|i| i.portal_configured = on);
    }

    pub fn problems(&self) -> Vec<String> {
        self.with(|i| i.problems.clone())
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.with(|i| i.requests.clone())
    }

    pub fn customers(&self) -> Vec<Value> {
        self.with(|i| i.customers.values().cloned().collect())
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.with(|i| i.sessions.values().cloned().collect())
    }

    pub fn subscription(&self, id: &str) -> Option<Sub> {
        self.with(|i| i.subscriptions.get(id).cloned())
    }

    fn id(inner: &mut Inner, prefix: &str) -> String {
        inner.next += 1;
        format!("{prefix}_stub{:06}", inner.next)
    }

    fn event(inner: &mut Inner, kind: &str, object: Value) -> Value {
        let id = Self::id(inner, "evt");
        json!({
            "id": id, "object": "event", "type": kind,
            "api_version": aide::billing::stripe::API_VERSION,
            "created": chrono::Utc::now().timestamp(), "livemode": false,
            "data": {"object": object},
        })
    }

    /// Pays for a Checkout Session: its customer gets an active subscription. Returns the events
    /// Stripe sends: the session completed, the subscription created, the invoice paid.
    pub fn complete_checkout(&self, session: &str) -> (String, Vec<Value>) {
        self.with(|i| {
            let s = i.sessions.get(session).cloned().expect("a session of the stand-in");
            let customer = s["customer"].as_str().expect("customer").to_string();
            let id = Self::id(i, "sub");
            let now = chrono::Utc::now().timestamp();
            let sub = Sub {
                id: id.clone(),
                customer: customer.clone(),
                status: "active".into(),
                created: now,
                cancel_at_period_end: false,
                period_end: now + 30 * 86_400,
                price: PRICE.into(),
            };
            i.subscriptions.insert(id.clone(), sub.clone());
            let mut completed = s.clone();
            completed["status"] = json!("complete");
            completed["subscription"] = json!(id);
            i.sessions.insert(session.to_string(), completed.clone());
            let invoice = Self::id(i, "in");
            let events = vec![
                Self::event(i, "checkout.session.completed", completed),
                Self::event(i, "customer.subscription.created", sub.object()),
                Self::event(
                    i,
                    "invoice.paid",
                    json!({"id": invoice, "object": "invoice", "customer": customer, "subscription": id}),
                ),
            ];
            (id, events)
        })
    }

    /// Changes a subscription as `change` says; returns the event Stripe sends (deleted when it
    /// ends up canceled).
    pub fn update(&self, sub: &str, change: impl FnOnce(&mut Sub)) -> Value {
        self.with(|i| {
            let s = i
                .subscriptions
                .get_mut(sub)
                .expect("a subscription of the stand-in");
            change(s);
            let s = s.clone();
            let kind = if s.status == "canceled" {
                "customer.subscription.deleted"
            } else {
                "customer.subscription.updated"
            };
            Self::event(i, kind, s.object())
        })
    }

    /// A payment failed: the subscription goes past_due; returns `invoice.payment_failed`.
    pub fn fail_payment(&self, sub: &str) -> Value {
        self.with(|i| {
            let s = i.subscriptions.get_mut(sub).expect("a subscription");
            s.status = "past_due".into();
            let customer = s.customer.clone();
            let invoice = Self::id(i, "in");
            Self::event(
                i,
                "invoice.payment_failed",
                json!({"id": invoice, "object": "invoice", "customer": customer, "subscription": sub}),
            )
        })
    }

    /// Any other event, for a customer.
    pub fn other_event(&self, kind: &str, object: Value) -> Value {
        self.with(|i| Self::event(i, kind, object))
    }

    /// The body and `Stripe-Signature` header Stripe would send for `event`, signed now.
    pub fn signed(event: &Value) -> (String, String) {
        Self::signed_with(event, WEBHOOK_SECRET, chrono::Utc::now().timestamp())
    }

    pub fn signed_with(event: &Value, secret: &str, timestamp: i64) -> (String, String) {
        let body = event.to_string();
        let header = aide::billing::signature::sign(body.as_bytes(), secret, timestamp);
        (body, header)
    }
}

fn allowed(path: &str) -> &'static [&'static str] {
    match path {
        "/v1/customers" => &["email", "metadata", "name"],
        "/v1/checkout/sessions" => &[
            "mode",
            "customer",
            "client_reference_id",
            "line_items",
            "success_url",
            "cancel_url",
            "metadata",
            "subscription_data",
            "expires_at",
        ],
        "/v1/billing_portal/sessions" => &["customer", "return_url", "configuration"],
        "/v1/subscriptions" => &["customer", "status", "limit", "starting_after"],
        _ => &[],
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stall(&inner).await;
    answer(&inner, method, uri.path(), None, query, &headers, &body)
}

/// Waits as [`StripeStub::stall_next`] asked, without holding the state.
async fn stall(inner: &Mutex<Inner>) {
    let wait = {
        let mut i = inner.lock().expect("lock");
        if i.stalls.is_empty() {
            None
        } else {
            Some(i.stalls.remove(0))
        }
    };
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
    }
}

async fn handle_id(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .rsplit_once('/')
        .map(|(p, _)| p)
        .unwrap_or_default();
    answer(&inner, method, path, Some(id), None, &headers, &body)
}

fn answer(
    inner: &Mutex<Inner>,
    method: Method,
    path: &str,
    id: Option<String>,
    query: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut i = inner.lock().expect("lock");
    i.requests.push((method.to_string(), path.to_string()));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    if header("authorization").as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        i.problems
            .push(format!("{method} {path}: not the Bearer test key"));
        return error(
            401,
            "invalid_request_error",
            "Invalid API Key provided.",
            None,
        );
    }
    if header("stripe-version").as_deref() != Some(aide::billing::stripe::API_VERSION) {
        i.problems.push(format!(
            "{method} {path}: Stripe-Version {:?}",
            header("stripe-version")
        ));
        return error(
            400,
            "invalid_request_error",
            "Invalid Stripe API version.",
            None,
        );
    }
    if let Some((status, retry_after, should_retry)) = i.script.pop_front() {
        let mut response = error(status, "api_error", "Scripted failure.", None);
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("value"));
        }
        if let Some(retry) = should_retry {
            response.headers_mut().insert(
                "stripe-should-retry",
                retry.to_string().parse().expect("value"),
            );
        }
        return response;
    }
    if i.down {
        return error(500, "api_error", "Stripe is down (stand-in).", None);
    }
    if std::mem::take(&mut i.key_in_use_next) {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": {"type": "idempotency_error", "code": "idempotency_key_in_use",
                "message": "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later."}})),
        )
            .into_response();
    }
    let raw = match method {
        Method::POST => {
            if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
                i.problems.push(format!(
                    "{method} {path}: content type {:?}",
                    header("content-type")
                ));
            }
            String::from_utf8_lossy(body).into_owned()
        }
        _ => query.unwrap_or_default(),
    };
    let params = match parse_form(&raw) {
        Ok(p) => p,
        Err(e) => {
            i.problems.push(format!("{method} {path}: {e}"));
            return error(400, "invalid_request_error", &e, None);
        }
    };
    if id.is_none() {
        for key in params
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !allowed(path).contains(&key.as_str()) {
                i.problems
                    .push(format!("{method} {path}: unknown parameter {key}"));
                return error(
                    400,
                    "invalid_request_error",
                    &format!("Received unknown parameter: {key}"),
                    Some(&key),
                );
            }
        }
    }
    let mut replay_key = None;
    if method == Method::POST {
        let Some(key) = header("idempotency-key") else {
            i.problems
                .push(format!("{method} {path}: no Idempotency-Key"));
            return error(
                400,
                "invalid_request_error",
                "An Idempotency-Key is required here (stand-in).",
                None,
            );
        };
        let k = (method.to_string(), path.to_string(), key.clone());
        if let Some((first, status, answer)) = i.idempotent.get(&k).cloned() {
            if first != raw {
                return error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than the one used in the original request.",
                    None,
                );
            }
            let mut response = (
                StatusCode::from_u16(status).expect("status"),
                axum::Json(answer),
            )
                .into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().expect("value"));
            return response;
        }
        replay_key = Some(k);
    }
    let (status, value) = perform(&mut i, &method, path, id, &params);
    if let Some(k) = replay_key {
        i.idempotent.insert(k, (raw, status, value.clone()));
        if std::mem::take(&mut i.lose_next_answer) {
            return error(500, "api_error", "The answer was lost (stand-in).", None);
        }
    }
    (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(value),
    )
        .into_response()
}

fn perform(
    i: &mut Inner,
    method: &Method,
    path: &str,
    id: Option<String>,
    p: &Value,
) -> (u16, Value) {
    let text = |v: &Value| v.as_str().map(String::from);
    let missing = |what: &str, id: &str| {
        (
            404,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                "message": format!("No such {what}: '{id}'")}}),
        )
    };
    match (method.as_str(), path) {
        ("POST", "/v1/customers") => {
            let id = StripeStub::id(i, "cus");
            let customer = json!({"id": id, "object": "customer", "email": p["email"], "metadata": p["metadata"]});
            if p["metadata"]["user_id"].is_null() {
                i.problems.push("customer without metadata[user_id]".into());
            }
            i.customers.insert(id, customer.clone());
            (200, customer)
        }
        ("DELETE", "/v1/customers") => {
            let id = id.unwrap_or_default();
            if i.customers.remove(&id).is_none() {
                return missing("customer", &id);
            }
            for s in i.subscriptions.values_mut().filter(|s| s.customer == id) {
                s.status = "canceled".into();
            }
            (
                200,
                json!({"id": id, "object": "customer", "deleted": true}),
            )
        }
        ("POST", "/v1/checkout/sessions") => {
            let customer = text(&p["customer"]).unwrap_or_default();
            if !i.customers.contains_key(&customer) {
                return missing("customer", &customer);
            }
            if text(&p["mode"]).as_deref() != Some("subscription") {
                i.problems.push(format!("checkout mode {:?}", p["mode"]));
            }
            if text(&p["line_items"]["0"]["price"]).as_deref() != Some(PRICE)
                || text(&p["line_items"]["0"]["quantity"]).as_deref() != Some("1")
            {
                i.problems
                    .push(format!("checkout line items {}", p["line_items"]));
            }
            if !text(&p["success_url"])
                .unwrap_or_default()
                .contains("{CHECKOUT_SESSION_ID}")
            {
                i.problems
                    .push("success_url without {CHECKOUT_SESSION_ID}".into());
            }
            if p["subscription_data"]["metadata"]["user_id"].is_null()
                || p["client_reference_id"].is_null()
            {
                i.problems.push("checkout without the user's id".into());
            }
            let id = format!("cs_test_{}", StripeStub::id(i, "x"));
            let session = json!({
                "id": id, "object": "checkout.session", "mode": "subscription", "status": "open",
                "customer": customer, "client_reference_id": p["client_reference_id"],
                "url": format!("https://checkout.stripe.com/c/pay/{id}"),
                "success_url": p["success_url"], "subscription": null,
            });
            i.sessions.insert(id, session.clone());
            (200, session)
        }
        ("GET", "/v1/checkout/sessions") => {
            let id = id.unwrap_or_default();
            match i.sessions.get(&id) {
                Some(s) => (200, s.clone()),
                None => missing("checkout.session", &id),
            }
        }
        ("POST", "/v1/billing_portal/sessions") => {
            if !i.portal_configured {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error",
                    "message": "No configuration provided and your test mode default configuration has not been created. Provide a configuration or create your default by saving your customer portal settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal."}}),
                );
            }
            let customer = text(&p["customer"]).unwrap_or_default();
            if !i.customers.contains_key(&customer) {
                return missing("customer", &customer);
            }
            let id = StripeStub::id(i, "bps");
            (
                200,
                json!({"id": id, "object": "billing_portal.session", "customer": customer,
                "url": format!("https://billing.stripe.com/p/session/{id}"), "return_url": p["return_url"]}),
            )
        }
        ("GET", "/v1/subscriptions") => {
            let customer = text(&p["customer"]).unwrap_or_default();
            let all = text(&p["status"]).as_deref() == Some("all");
            let mut data: Vec<Value> = i
                .subscriptions
                .values()
                .filter(|s| s.customer == customer && (all || s.status != "canceled"))
                .map(Sub::object)
                .collect();
            data.reverse();
            (
                200,
                json!({"object": "list", "url": "/v1/subscriptions", "has_more": false, "data": data}),
            )
        }
        ("DELETE", "/v1/subscriptions") => {
            let id = id.unwrap_or_default();
            match i.subscriptions.get_mut(&id) {
                Some(s) => {
                    s.status = "canceled".into();
                    (200, s.object())
                }
                None => missing("subscription", &id),
            }
        }
        _ => (
            404,
            json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
        ),
    }
}
