//! The `customers` routes: a customer's profile of personal data (stream
//! `customer-<customer_id>`), what Annals holds about the customer (the access
//! endpoint), and its erasure (crypto-shredding: the customer's keys are destroyed).
//!
//! Personal fields are sealed before the command is decided ([`crate::personal_data`]):
//! no request body with personal data is fingerprinted for the idempotency store, and no
//! answer that store keeps holds any (commands answer `{stream, version, position}`).
//! Every route answers 503 `personal-data-disabled` on a server without a master key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use eventstore::{Direction, EventId, RecordedEvent, Version};
use privacy::{Binding, KeyStore};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::commands::{CommandHeaders, CommandRequest, Reply, run};
use crate::extract::{CustomerPath, JsonBody, QueryParams, check_entity_id};
use crate::gate::Identity;
use crate::personal_data::{self, Opened};
use crate::problem::ApiError;
use crate::queries::{blocking, load, read_your_writes};
use crate::responses::{
    BadRequest, CommandProblems, Conflict, PersonalDataUnavailable, UnknownCustomer,
};

/// The longest personal field, in bytes.
pub(crate) const MAX_FIELD_BYTES: usize = privacy::MAX_PLAINTEXT_LEN;

/// `POST /api/v1/customers`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomer {
    /// The customer: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
    #[schema(example = "alice", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub customer_id: String,
    /// The customer's name; not blank, at most 1024 bytes (UTF-8). Personal data.
    #[schema(
        example = "Alice Liddell",
        max_length = 1024,
        pattern = r"[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub name: String,
    /// The customer's email address: with an `@`, at most 1024 bytes. Personal data.
    #[schema(example = "alice@example.com", max_length = 1024, pattern = "@")]
    pub email: String,
    /// The customer's postal address; not blank, at most 1024 bytes. Personal data.
    #[schema(
        example = "1 Rabbit Hole, Oxford",
        max_length = 1024,
        pattern = r"[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub address: String,
}

/// `DELETE /api/v1/customers/{customer_id}/personal-data`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasePersonalData {
    /// Why (a ticket, the customer's request); not blank; recorded in the log, so it must
    /// hold no personal data.
    #[schema(
        example = "the customer asked to be forgotten (ticket 4711)",
        pattern = r"[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub reason: String,
}

/// A customer's profile, decrypted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    /// The customer.
    pub customer_id: String,
    /// The name; null once erased, or when it cannot be read.
    pub name: Option<String>,
    /// The email address; null once erased, or when it cannot be read.
    pub email: Option<String>,
    /// The postal address; null once erased, or when it cannot be read.
    pub address: Option<String>,
    /// Whether the customer's personal data was erased.
    pub erased: bool,
    /// When it was erased (RFC 3339, UTC); null unless erased.
    pub erased_at: Option<String>,
}

/// Every personal field Annals holds about a customer, decrypted, with where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonalDataView {
    /// The customer.
    pub customer_id: String,
    /// Whether the customer's personal data was erased (then `fields` is empty).
    pub erased: bool,
    /// When it was erased (RFC 3339, UTC); null unless erased.
    pub erased_at: Option<String>,
    /// The fields, in log order.
    pub fields: Vec<PersonalFieldView>,
}

/// One personal field of one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonalFieldView {
    /// The field's name in the event, e.g. `email` or `shipping_address`.
    pub field: String,
    /// The value; null when it cannot be read (`unreadable` says why).
    pub value: Option<String>,
    /// Why the value cannot be read: `tampered` (altered, or moved from another event
    /// or field) or `unknown_key` (under a key this server's key store does not hold);
    /// absent when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<&'static str>,
    /// The type of the event holding it.
    pub event_type: String,
    /// The stream of that event.
    pub stream: String,
    /// The event's id.
    pub event_id: String,
    /// The event's position in the log.
    pub position: u64,
    /// When the event was recorded (RFC 3339, UTC).
    pub recorded_at: String,
}

/// What an erasure did (the first erasure's, when asked again).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErasureView {
    /// The customer.
    pub customer_id: String,
    /// When the erasure was recorded (RFC 3339, UTC).
    pub erased_at: String,
    /// The customer's keys, destroyed.
    pub destroyed_keys: Vec<uuid::Uuid>,
    /// The customer's stream, `customer-<customer_id>`.
    pub stream: String,
    /// The stream's version after the erasure (also the `ETag`).
    pub version: u64,
    /// The erasure event's position in the log.
    pub position: u64,
}

/// The customer's profile query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProfileQuery {
    /// Wait until the profile reflects the event at this position (the `position` a
    /// command answered). Same as the `Annals-Min-Position` header.
    min_position: Option<u64>,
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Checks a personal field: not blank, at most [`MAX_FIELD_BYTES`] bytes.
pub(crate) fn check_field(field: &'static str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "blank-field",
            "Domain rule violated",
            format!("{field} must not be blank"),
        ));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field-too-long",
            "Domain rule violated",
            format!(
                "{field} has {} bytes, more than the {MAX_FIELD_BYTES} allowed",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The stream id of the customer `customer_id`.
fn customer_stream(customer_id: &str) -> String {
    format!("customer-{customer_id}")
}

/// Register a customer's profile. The name, email and address are sealed under the
/// customer's own key before they reach the log.
#[utoipa::path(
    post,
    path = "/api/v1/customers",
    tag = "customers",
    request_body = RegisterCustomer,
    params(CommandHeaders),
    responses(
        (status = 201, description = "Registered", body = crate::commands::CommandAccepted,
            headers(("ETag" = String, description = "The stream version, quoted"),
                    ("Location" = String, description = "The customer's URL"))),
        CommandProblems, Conflict,
    )
)]
pub(crate) async fn register_customer(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<RegisterCustomer>,
) -> Result<Response, ApiError> {
    check_entity_id("customer id", &body.customer_id)?;
    check_field("name", &body.name)?;
    check_field("email", &body.email)?;
    if !body.email.contains('@') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-email",
            "Domain rule violated",
            "email has no @",
        ));
    }
    check_field("address", &body.address)?;
    let key_store = personal_data::key_store(&state)?;
    // The idempotency record keeps the fingerprint: of the customer id only, never of
    // personal data (a retry under the same key with other values replays the answer).
    let fingerprinted = serde_json::json!({ "customer_id": body.customer_id });
    let request = CommandRequest::new(
        "register_customer",
        &uri,
        &headers,
        &fingerprinted,
        identity,
    )?;
    run(&state, request, |context| async move {
        let customer_id = body.customer_id;
        if key_store
            .keys_of(&customer_id)
            .iter()
            .any(|key| key.destroyed_at.is_some())
        {
            // An erased id is not reused, and no new key is made for it.
            return Err(ApiError::from(&customers::Error::AlreadyErased));
        }
        let key_id = personal_data::create_key(&key_store, &customer_id).await?;
        let stream = customer_stream(&customer_id);
        let event_id = EventId::derived(context.command_id(), 0).as_uuid();
        let seal = |field: &'static str, value: &str| {
            let binding = Binding {
                stream: &stream,
                event_id,
                field,
            };
            personal_data::seal(&key_store, key_id, &binding, value)
        };
        let command = customers::Command::RegisterCustomer {
            customer_id: customer_id.clone(),
            name: seal("name", &body.name)?,
            email: seal("email", &body.email)?,
            address: seal("address", &body.address)?,
        };
        let committed = context
            .execute(&context.state.inner.customers, &customer_id, &command)
            .await?;
        Ok(Reply::accepted(StatusCode::CREATED, &committed)?
            .with_location(format!("/api/v1/customers/{customer_id}")))
    })
    .await
}

/// The events of a customer's stream (a handful: its registration and its erasure).
async fn customer_events(
    state: &AppState,
    customer_id: &str,
) -> Result<Vec<RecordedEvent>, ApiError> {
    let stream = crate::extract::check_stream_id("customer", &customer_stream(customer_id))?;
    let store = state.store().clone();
    blocking(move || store.read_stream(&stream, Version(0), Direction::Forward, 64)).await
}

/// A customer's events decoded: the registration (with its event) and the erasure.
struct CustomerRecord {
    registered: Option<(RecordedEvent, customers::Event)>,
    erased: Option<(RecordedEvent, customers::Event)>,
}

fn decode(events: Vec<RecordedEvent>) -> Result<CustomerRecord, ApiError> {
    use eventstore::Aggregate;
    let mut record = CustomerRecord {
        registered: None,
        erased: None,
    };
    for event in events {
        let decoded = customers::Customer::decode_event(event.schema_version, &event.payload)?;
        match decoded {
            customers::Event::CustomerRegistered { .. } => {
                record.registered = Some((event, decoded));
            }
            customers::Event::PersonalDataErased { .. } => {
                if record.erased.is_none() {
                    record.erased = Some((event, decoded));
                }
            }
        }
    }
    Ok(record)
}

/// A customer's profile, decrypted: null fields and `erased` once erased.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{customer_id}",
    tag = "customers",
    params(
        ("customer_id" = String, Path, description = "The customer"),
        ProfileQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this position is applied"),
    ),
    responses(
        (status = 200, description = "The profile", body = CustomerView),
        BadRequest, UnknownCustomer, PersonalDataUnavailable,
    )
)]
pub(crate) async fn get_customer(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    headers: HeaderMap,
    QueryParams(query): QueryParams<ProfileQuery>,
) -> Result<Response, ApiError> {
    let key_store = personal_data::key_store(&state)?;
    read_your_writes(&state, query.min_position, &headers).await?;
    let record = decode(customer_events(&state, &customer_id).await?)?;
    let Some((
        event,
        customers::Event::CustomerRegistered {
            name,
            email,
            address,
            ..
        },
    )) = record.registered
    else {
        return Err(unknown_customer(&customer_id));
    };
    let open = |field: &'static str, sealed: &privacy::Sealed| {
        let binding = Binding {
            stream: event.stream_id.as_str(),
            event_id: event.id.as_uuid(),
            field,
        };
        personal_data::open(&key_store, sealed, &binding).value
    };
    let erased_at = record.erased.as_ref().map(|(event, _)| event.recorded_at);
    let view = CustomerView {
        customer_id: customer_id.clone(),
        name: open("name", &name),
        email: open("email", &email),
        address: open("address", &address),
        erased: erased_at.is_some(),
        erased_at: erased_at.map(rfc3339),
    };
    Ok(axum::Json(view).into_response())
}

fn unknown_customer(customer_id: &str) -> ApiError {
    ApiError::not_found(
        "unknown-customer",
        format!("customer {customer_id} is not registered"),
    )
}

/// The erasure the customer's stream records, as the erasure route answers it.
fn erasure_view(
    customer_id: &str,
    event: &RecordedEvent,
    decoded: &customers::Event,
) -> ErasureView {
    let key_ids = match decoded {
        customers::Event::PersonalDataErased { key_ids, .. } => {
            key_ids.iter().map(|key| key.0).collect()
        }
        customers::Event::CustomerRegistered { .. } => Vec::new(),
    };
    ErasureView {
        customer_id: customer_id.to_owned(),
        erased_at: rfc3339(event.recorded_at),
        destroyed_keys: key_ids,
        stream: event.stream_id.to_string(),
        version: event.version.0,
        position: event.position.0,
    }
}

/// Destroys the customer's keys, off the async workers.
async fn destroy_keys(key_store: &KeyStore, customer_id: &str) -> Result<(), ApiError> {
    let key_store = key_store.clone();
    let customer_id = customer_id.to_owned();
    tokio::task::spawn_blocking(move || key_store.erase(&customer_id))
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(|error| ApiError::internal(&error))?;
    Ok(())
}

/// Erase a customer's personal data: records `PersonalDataErased` (who, when, why, which
/// keys; no personal data) and destroys the customer's keys, so that every personal
/// field under them, in every event and every copy, can never be read again. Asked
/// again, it answers the first erasure.
#[utoipa::path(
    delete,
    path = "/api/v1/customers/{customer_id}/personal-data",
    tag = "customers",
    request_body = ErasePersonalData,
    params(("customer_id" = String, Path, description = "The customer"), CommandHeaders),
    responses(
        (status = 200, description = "Erased (now, or by the first erasure)", body = ErasureView,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        CommandProblems, UnknownCustomer, Conflict,
    )
)]
pub(crate) async fn erase_personal_data(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<ErasePersonalData>,
) -> Result<Response, ApiError> {
    if body.reason.trim().is_empty() {
        return Err(ApiError::from(&customers::Error::BlankReason));
    }
    let key_store = personal_data::key_store(&state)?;
    let erased_by = identity.0.as_ref().map_or_else(
        || "anonymous".to_owned(),
        |caller| caller.principal.subject.clone(),
    );
    let request = CommandRequest::new("erase_personal_data", &uri, &headers, &body, identity)?;
    run(&state, request, |context| async move {
        let loaded = load(&context.state.inner.customers, customer_id.clone()).await?;
        let key_ids: Vec<privacy::KeyId> = key_store
            .keys_of(&customer_id)
            .into_iter()
            .map(|key| key.key_id)
            .collect();
        match loaded.state.status() {
            // Neither a profile nor keys: nothing is held about this customer.
            customers::CustomerStatus::None if key_ids.is_empty() => {
                return Err(unknown_customer(&customer_id));
            }
            customers::CustomerStatus::Erased => {
                return first_erasure(&context.state, &key_store, &customer_id).await;
            }
            customers::CustomerStatus::None | customers::CustomerStatus::Registered => {}
        }
        let command = customers::Command::ErasePersonalData {
            customer_id: customer_id.clone(),
            reason: body.reason,
            erased_by,
            key_ids,
        };
        let committed = match context
            .execute(&context.state.inner.customers, &customer_id, &command)
            .await
        {
            Ok(committed) => committed,
            // Another erasure came first.
            Err(error) if error.status() == StatusCode::CONFLICT => {
                return first_erasure(&context.state, &key_store, &customer_id).await;
            }
            Err(error) => return Err(error),
        };
        destroy_keys(&key_store, &customer_id).await?;
        let position = committed.outcome.last_position;
        let store = context.state.store().clone();
        let mut events = blocking(move || store.read_all(position, 1)).await?;
        let Some(event) = events.pop() else {
            return Err(ApiError::internal(
                &"the erasure's event cannot be read back",
            ));
        };
        let decoded = {
            use eventstore::Aggregate;
            customers::Customer::decode_event(event.schema_version, &event.payload)?
        };
        let view = erasure_view(&customer_id, &event, &decoded);
        Reply::new(StatusCode::OK, event.version, &view)
    })
    .await
}

/// The answer to an erasure asked again: the first one, read from the customer's
/// stream (its keys destroyed again, should a crash have kept them).
async fn first_erasure(
    state: &AppState,
    key_store: &KeyStore,
    customer_id: &str,
) -> Result<Reply, ApiError> {
    destroy_keys(key_store, customer_id).await?;
    let record = decode(customer_events(state, customer_id).await?)?;
    let Some((event, decoded)) = record.erased else {
        return Err(unknown_customer(customer_id));
    };
    let view = erasure_view(customer_id, &event, &decoded);
    Reply::new(StatusCode::OK, event.version, &view)
}

/// The key ids of a customer, and whether they were all destroyed.
fn erased_at_of(key_store: &KeyStore, customer_id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let keys = key_store.keys_of(customer_id);
    if keys.is_empty() || keys.iter().any(|key| key.destroyed_at.is_none()) {
        return None;
    }
    keys.iter().filter_map(|key| key.destroyed_at).max()
}

/// Every personal field held about a customer, in any event (its profile, its orders'
/// shipping addresses), decrypted, with where each is: found through the customer's
/// keys and the `personal_data` read model (which indexes every sealed field by key),
/// each read from its event in the log and opened at its own place. After an erasure,
/// `fields` is empty. A field that cannot be read (tampered, moved, an unknown key) is
/// listed with `value: null` and `unreadable`, never dropped silently.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{customer_id}/personal-data",
    tag = "customers",
    params(
        ("customer_id" = String, Path, description = "The customer"),
        ProfileQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this position is applied"),
    ),
    responses(
        (status = 200, description = "Every personal field held about the customer", body = PersonalDataView),
        BadRequest, UnknownCustomer, PersonalDataUnavailable,
    )
)]
pub(crate) async fn personal_data(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    headers: HeaderMap,
    QueryParams(query): QueryParams<ProfileQuery>,
) -> Result<Response, ApiError> {
    let key_store = personal_data::key_store(&state)?;
    let wanted = crate::routes::read_models::min_position(query.min_position, &headers)?;
    let record = decode(customer_events(&state, &customer_id).await?)?;
    let keys = key_store.keys_of(&customer_id);
    if keys.is_empty() && record.registered.is_none() {
        return Err(unknown_customer(&customer_id));
    }
    let erased_at = record
        .erased
        .as_ref()
        .map(|(event, _)| event.recorded_at)
        .or_else(|| erased_at_of(&key_store, &customer_id));
    let mut fields = Vec::new();
    if erased_at.is_none() {
        let key_ids: Vec<privacy::KeyId> = keys.iter().map(|key| key.key_id).collect();
        for indexed in indexed_fields(&state, key_ids, wanted).await? {
            let Opened {
                value, unreadable, ..
            } = personal_data::open_field(&key_store, &indexed.sealed);
            fields.push(PersonalFieldView {
                field: indexed.sealed.field.clone(),
                value,
                unreadable,
                event_type: indexed.event_type,
                stream: indexed.sealed.stream.clone(),
                event_id: indexed.sealed.event_id.to_string(),
                position: indexed.position,
                recorded_at: rfc3339(indexed.recorded_at),
            });
        }
    }
    let view = PersonalDataView {
        customer_id,
        erased: erased_at.is_some(),
        erased_at: erased_at.map(rfc3339),
        fields,
    };
    Ok(axum::Json(view).into_response())
}

/// Every personal field sealed under `key_ids`, in log order, from the
/// `personal_data` read model (once it applied `wanted`).
async fn indexed_fields(
    state: &AppState,
    key_ids: Vec<privacy::KeyId>,
    wanted: Option<u64>,
) -> Result<Vec<read_models::PersonalDataField>, ApiError> {
    let projections = state
        .projections()
        .cloned()
        .ok_or_else(crate::problem::projections_not_running)?;
    if let Some(wanted) = wanted {
        let timeout = state.config().projection_wait_timeout;
        projections
            .wait_for_model(
                read_models::PERSONAL_DATA,
                eventstore::Position(wanted),
                timeout,
            )
            .await?;
    }
    let fields = tokio::task::spawn_blocking(move || projections.personal_data(&key_ids))
        .await
        .map_err(|error| ApiError::internal(&error))??;
    Ok(fields)
}

/// The customer's profile address in plaintext, if the customer has a readable profile
/// (registered, not erased, not tampered): what an order without a `shipping_address`
/// ships to. Read from the customer's stream, not a read model, so that an order placed
/// right after the registration sees it.
pub(crate) async fn profile_address(
    state: &AppState,
    key_store: &KeyStore,
    customer_id: &str,
) -> Result<Option<String>, ApiError> {
    let record = decode(customer_events(state, customer_id).await?)?;
    if record.erased.is_some() {
        return Ok(None);
    }
    let Some((event, customers::Event::CustomerRegistered { address, .. })) = record.registered
    else {
        return Ok(None);
    };
    let binding = Binding {
        stream: event.stream_id.as_str(),
        event_id: event.id.as_uuid(),
        field: "address",
    };
    Ok(personal_data::open(key_store, &address, &binding).value)
}
