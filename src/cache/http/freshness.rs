//! The HTTP caching rules as pure functions: whether a response may be stored (RFC 9111 §3),
//! how long it is fresh (§4.2.1, §4.2.2), how old it is (§4.2.3), and whether a stored response
//! may answer a request (§4, §4.2.4, RFC 5861). No clock, no store: every input is an argument,
//! so the table tests below pin each rule on both sides of its boundary.
//!
//! Times are in ticks (nanoseconds of the cache's clock); header values are seconds.

use http::{HeaderMap, Method, StatusCode, header};

use super::directives::{self, RequestDirectives, ResponseDirectives};

const TICKS_PER_SECOND: u64 = 1_000_000_000;

fn ticks(seconds: u64) -> u64 {
    seconds.saturating_mul(TICKS_PER_SECOND)
}

/// The settings the rules depend on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// A shared cache (in front of a server, or a proxy) rather than a private one (one user's
    /// client): `private` is not stored, `s-maxage` and `proxy-revalidate` apply, and requests
    /// with `Authorization` or `Cookie` need the response's leave to be stored.
    pub(crate) shared: bool,
    /// The share of `Date − Last-Modified` a response without explicit freshness is fresh for
    /// (§4.2.2; 0.1 is the customary value), or `None` for no heuristic freshness.
    pub(crate) heuristic: Option<f64>,
    /// The stale-while-revalidate window for a response that sets none, in ticks.
    pub(crate) stale_while_revalidate: u64,
    /// The stale-if-error window for a response that sets none, in ticks.
    pub(crate) stale_if_error: u64,
    /// Whether a response carrying `Set-Cookie` may be stored (with the header removed).
    pub(crate) store_set_cookie: bool,
}

/// When a response was asked for and received: ticks of the cache's clock, and the wall-clock
/// second (since the Unix epoch) of the receipt, for the `Date` arithmetic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exchange {
    pub(crate) request_time: u64,
    pub(crate) response_time: u64,
    pub(crate) response_wall: u64,
}

/// What the cache keeps of a response's freshness, computed once on receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// The freshness lifetime (§4.2.1), in ticks.
    pub(crate) lifetime: u64,
    /// The corrected initial age (§4.2.3), in ticks.
    pub(crate) initial_age: u64,
    /// When the response was received, in ticks.
    pub(crate) response_time: u64,
    /// How long past freshness it may be served while it is revalidated (RFC 5861 §3).
    pub(crate) stale_while_revalidate: u64,
    /// How long past freshness it may stand in for an error (RFC 5861 §4).
    pub(crate) stale_if_error: u64,
    /// Never served stale, not even for an error (`must-revalidate`, and in a shared cache
    /// `proxy-revalidate` or `s-maxage`: §5.2.2.2, §5.2.2.8, §5.2.2.10).
    pub(crate) revalidate: bool,
    /// Revalidated before every use (`no-cache`, §5.2.2.4).
    pub(crate) no_cache: bool,
}

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// Only `GET` responses are stored (`HEAD` is answered from them).
    Method,
    /// A status the cache does not keep: informational, `206`, `304`, or a server error (kept
    /// out so it never displaces the entry stale-if-error would serve).
    Status,
    /// `no-store` in the response (§5.2.2.5).
    NoStore,
    /// `no-store` in the request (§5.2.1.5): this answer is not stored, nothing else changes.
    RequestNoStore,
    /// `private` in a shared cache (§5.2.2.7).
    Private,
    /// The request carried `Authorization` or `Cookie` and the response did not say it may be
    /// shared (`public`, `s-maxage`, `must-revalidate`: §3.5).
    Credentials,
    /// The response sets a cookie (not stored unless configured).
    SetCookie,
    /// `Vary: *`, or a `Vary` that names something that is not a header (§4.1).
    Vary,
    /// Nothing in the response allows storing it (§3: no explicit freshness, no `public`, and
    /// a status that is not heuristically cacheable), or nothing makes a stored copy useful
    /// (no freshness, no validator, no stale window of its own).
    Useless,
}

/// Whether a response may be stored, and if so its freshness.
pub(crate) fn storable(
    rules: &Rules,
    method: &Method,
    request: &HeaderMap,
    request_directives: &RequestDirectives,
    status: StatusCode,
    response: &HeaderMap,
    exchange: Exchange,
) -> Result<Freshness, NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if !status_kept(status) {
        return Err(NotStored::Status);
    }
    let cc = ResponseDirectives::parse(response);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if request_directives.no_store {
        return Err(NotStored::RequestNoStore);
    }
    if rules.shared && cc.private {
        return Err(NotStored::Private);
    }
    let credentials =
        request.contains_key(header::AUTHORIZATION) || request.contains_key(header::COOKIE);
    if rules.shared && credentials && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Credentials);
    }
    if response.contains_key(header::SET_COOKIE) && !rules.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if directives::vary_names(response)
        .any(|name| name == "*" || http::HeaderName::from_bytes(name.as_bytes()).is_err())
    {
        return Err(NotStored::Vary);
    }
    // §3: at least one of explicit freshness, `public`, `private` (in a private cache), or a
    // heuristically cacheable status.
    let explicit = cc.max_age.is_some()
        || (rules.shared && cc.s_maxage.is_some())
        || response.contains_key(header::EXPIRES);
    if !(explicit || cc.public || (!rules.shared && cc.private) || heuristically_cacheable(status))
    {
        return Err(NotStored::Useless);
    }
    let lifetime = lifetime(rules, &cc, status, response, exchange);
    // The builder's windows widen only a freshness the response (or the heuristic) gave: a
    // response that says nothing about caching is never served stale on the cache's word.
    let fresh_by_rule = explicit || lifetime > 0;
    let revalidate =
        cc.must_revalidate || (rules.shared && (cc.proxy_revalidate || cc.s_maxage.is_some()));
    let window = |directive: Option<directives::Delta>, default: u64| match directive {
        Some(delta) => ticks(delta.or_zero()),
        None if fresh_by_rule => default,
        None => 0,
    };
    let (stale_while_revalidate, stale_if_error) = if revalidate || cc.no_cache {
        (0, 0)
    } else {
        (
            window(cc.stale_while_revalidate, rules.stale_while_revalidate),
            window(cc.stale_if_error, rules.stale_if_error),
        )
    };
    let validated =
        response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
    if lifetime == 0 && !validated && stale_while_revalidate == 0 && stale_if_error == 0 {
        return Err(NotStored::Useless);
    }
    Ok(Freshness {
        lifetime,
        initial_age: initial_age(response, exchange),
        response_time: exchange.response_time,
        stale_while_revalidate,
        stale_if_error,
        revalidate,
        no_cache: cc.no_cache,
    })
}

/// The statuses stored at all: final, complete responses that are not server errors.
fn status_kept(status: StatusCode) -> bool {
    !status.is_informational()
        && !status.is_server_error()
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Statuses heuristically cacheable by default (RFC 9110 §15.1), minus `206`.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The freshness lifetime (§4.2.1): `s-maxage` in a shared cache, else `max-age`, else
/// `Expires − Date`, else the heuristic if configured, else zero. Invalid or conflicting
/// values give zero (stale).
fn lifetime(
    rules: &Rules,
    cc: &ResponseDirectives,
    status: StatusCode,
    response: &HeaderMap,
    exchange: Exchange,
) -> u64 {
    if cc.conflicting {
        return 0;
    }
    if rules.shared {
        if let Some(s_maxage) = cc.s_maxage {
            return ticks(s_maxage.or_zero());
        }
    }
    if let Some(max_age) = cc.max_age {
        return ticks(max_age.or_zero());
    }
    // Without a (valid) `Date`, the receipt time stands in for it (RFC 9110 §6.6.1).
    let date = match directives::date(response, header::DATE) {
        Some(Ok(date)) => date,
        _ => exchange.response_wall,
    };
    match directives::date(response, header::EXPIRES) {
        Some(Ok(expires)) => return ticks(expires.saturating_sub(date)),
        // An invalid `Expires` (such as "0") means already expired (§5.3).
        Some(Err(())) => return 0,
        None => {}
    }
    match (
        rules.heuristic,
        directives::date(response, header::LAST_MODIFIED),
    ) {
        (Some(share), Some(Ok(modified))) if heuristically_cacheable(status) || cc.public => {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            #[allow(clippy::cast_sign_loss)]
            // a non-negative share of a non-negative count
            let seconds = (date.saturating_sub(modified) as f64 * share) as u64;
            ticks(seconds)
        }
        _ => 0,
    }
}

/// The corrected initial age (§4.2.3): the larger of the apparent age (receipt − `Date`) and
/// the `Age` the response came with plus the time the exchange took.
fn initial_age(response: &HeaderMap, exchange: Exchange) -> u64 {
    let apparent = match directives::date(response, header::DATE) {
        Some(Ok(date)) => ticks(exchange.response_wall.saturating_sub(date)),
        _ => 0,
    };
    let delay = exchange.response_time.saturating_sub(exchange.request_time);
    let corrected = ticks(directives::age(response)).saturating_add(delay);
    apparent.max(corrected)
}

impl Freshness {
    /// The current age at `now` (§4.2.3): the corrected initial age plus the time since
    /// receipt.
    pub(crate) fn age(&self, now: u64) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_sub(self.response_time))
    }

    /// When, in ticks of the cache's clock, the response stops being fresh.
    pub(crate) fn fresh_until(&self) -> u64 {
        self.response_time
            .saturating_add(self.lifetime.saturating_sub(self.initial_age))
    }

    /// The remaining freshness in whole seconds at age `age`, negative once stale (RFC 9211
    /// `ttl`).
    pub(crate) fn ttl_seconds(&self, age: u64) -> i64 {
        let seconds = |ticks: u64| i64::try_from(ticks / TICKS_PER_SECOND).unwrap_or(i64::MAX);
        if self.lifetime > age {
            seconds(self.lifetime - age)
        } else {
            // Rounded away from zero: one nanosecond stale is `ttl=-1`, never `ttl=0`.
            let stale = age - self.lifetime;
            -seconds(stale.saturating_add(TICKS_PER_SECOND - 1))
        }
    }

    /// Whether a failed fetch or a server error may be answered with this response at age
    /// `age` (stale-if-error, RFC 5861 §4; never past `must-revalidate` or `no-cache`).
    pub(crate) fn covers_error(&self, age: u64) -> bool {
        !self.revalidate
            && !self.no_cache
            && age.saturating_sub(self.lifetime) < self.stale_if_error
    }
}

/// Whether a stored response may answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Fresh and acceptable: served.
    Fresh,
    /// Stale but acceptable: served. `refresh` when within its stale-while-revalidate window,
    /// which starts one background revalidation; otherwise the client's `max-stale` allowed it.
    Stale { refresh: bool },
    /// Not usable as it is: forwarded (conditionally, if it has a validator).
    Forward(Forward),
}

/// Why a request with a stored response is forwarded (RFC 9211 `fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forward {
    /// The stored response is stale, or must be revalidated on every use (`fwd=stale`).
    Stale,
    /// The request's directives refused it (`fwd=request`).
    Request,
}

/// Whether `stored` (at age `age`) may answer a request with `request` directives (§4, §4.2.4,
/// RFC 5861 §3).
pub(crate) fn reuse(stored: &Freshness, age: u64, request: &RequestDirectives) -> Reuse {
    if request.no_cache {
        return Reuse::Forward(Forward::Request);
    }
    if stored.no_cache {
        return Reuse::Forward(Forward::Stale);
    }
    if request.max_age.is_some_and(|max| age > ticks(max)) {
        return Reuse::Forward(Forward::Request);
    }
    // §5.2.1.1: with `max-age` and no `max-stale`, the client wants no stale response.
    let stale_refused = request.max_age.is_some() && request.max_stale.is_none();
    if stored.lifetime > age {
        return match request.min_fresh {
            Some(min) if stored.lifetime - age < ticks(min) => Reuse::Forward(Forward::Request),
            _ => Reuse::Fresh,
        };
    }
    // Stale from here on.
    if stored.revalidate || request.min_fresh.is_some() {
        return Reuse::Forward(Forward::Stale);
    }
    if stale_refused {
        return Reuse::Forward(Forward::Request);
    }
    let staleness = age - stored.lifetime;
    if staleness < stored.stale_while_revalidate {
        return Reuse::Stale { refresh: true };
    }
    match request.max_stale {
        Some(None) => Reuse::Stale { refresh: false },
        Some(Some(max)) if staleness <= ticks(max) => Reuse::Stale { refresh: false },
        _ => Reuse::Forward(Forward::Stale),
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use http::HeaderValue;

    use super::*;

    const S: u64 = TICKS_PER_SECOND;
    const MS: u64 = TICKS_PER_SECOND / 1000;
    /// Sun, 06 Nov 1994 08:49:37 GMT.
    const WALL: u64 = 784_111_777;

    const SHARED: Rules = Rules {
        shared: true,
        heuristic: None,
        stale_while_revalidate: 0,
        stale_if_error: 0,
        store_set_cookie: false,
    };
    const PRIVATE: Rules = Rules {
        shared: false,
        ..SHARED
    };
    const AT: Exchange = Exchange {
        request_time: 1000 * S,
        response_time: 1000 * S,
        response_wall: WALL,
    };

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn store_with(
        rules: &Rules,
        request: &[(&'static str, &'static str)],
        response: &[(&'static str, &'static str)],
        exchange: Exchange,
    ) -> Result<Freshness, NotStored> {
        let request = headers(request);
        storable(
            rules,
            &Method::GET,
            &request,
            &RequestDirectives::parse(&request),
            StatusCode::OK,
            &headers(response),
            exchange,
        )
    }

    fn store(response: &[(&'static str, &'static str)]) -> Result<Freshness, NotStored> {
        store_with(&SHARED, &[], response, AT)
    }

    fn lifetime_of(rules: &Rules, response: &[(&'static str, &'static str)]) -> u64 {
        store_with(rules, &[], response, AT).map_or(0, |f| f.lifetime)
    }

    #[test]
    fn freshness_lifetime_comes_from_s_maxage_then_max_age_then_expires_minus_date() {
        // RFC 9111 §4.2.1.
        let both = [("cache-control", "max-age=60, s-maxage=120")];
        assert_eq!(
            lifetime_of(&SHARED, &both),
            120 * S,
            "s-maxage in a shared cache"
        );
        assert_eq!(
            lifetime_of(&PRIVATE, &both),
            60 * S,
            "ignored by a private one"
        );
        let expires = [
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
            ("etag", "\"v\""),
        ];
        assert_eq!(lifetime_of(&SHARED, &expires), 60 * S);
        let max_age_wins = [
            ("cache-control", "max-age=5"),
            ("expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
        ];
        assert_eq!(lifetime_of(&SHARED, &max_age_wins), 5 * S);
        // Expires without Date: counted from the receipt (which is WALL here).
        let no_date = [("expires", "Sun, 06 Nov 1994 08:49:47 GMT")];
        assert_eq!(lifetime_of(&SHARED, &no_date), 10 * S);
    }

    #[test]
    fn an_invalid_expires_or_max_age_means_already_stale() {
        // §5.3 and §4.2.1.
        let invalid = [("expires", "0"), ("etag", "\"v\"")];
        assert_eq!(lifetime_of(&SHARED, &invalid), 0);
        let bad = [("cache-control", "max-age=soon"), ("etag", "\"v\"")];
        assert_eq!(lifetime_of(&SHARED, &bad), 0);
        let twice = [
            ("cache-control", "max-age=60, max-age=10"),
            ("etag", "\"v\""),
        ];
        assert_eq!(lifetime_of(&SHARED, &twice), 0);
    }

    #[test]
    fn heuristic_freshness_only_when_configured_and_only_from_last_modified() {
        // §4.2.2: 10 % of the 1000 s since Last-Modified.
        let response = [
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("last-modified", "Sun, 06 Nov 1994 08:32:57 GMT"),
        ];
        assert_eq!(lifetime_of(&SHARED, &response), 0, "off by default");
        let heuristic = Rules {
            heuristic: Some(0.1),
            ..SHARED
        };
        assert_eq!(lifetime_of(&heuristic, &response), 100 * S);
        let explicit = [
            ("cache-control", "max-age=3"),
            ("last-modified", "Sun, 06 Nov 1994 08:32:57 GMT"),
        ];
        assert_eq!(lifetime_of(&heuristic, &explicit), 3 * S, "explicit wins");
        // Only for a heuristically cacheable status, or a `public` response (§4.2.2): a 403
        // a private cache keeps for its `private` gets none.
        let private = Rules {
            heuristic: Some(0.1),
            ..PRIVATE
        };
        let mut forbidden = headers(&response);
        forbidden.append("cache-control", HeaderValue::from_static("private"));
        let none = HeaderMap::new();
        let d = RequestDirectives::default();
        let lifetime = |response: &HeaderMap| {
            storable(
                &private,
                &Method::GET,
                &none,
                &d,
                StatusCode::FORBIDDEN,
                response,
                AT,
            )
            .map(|f| f.lifetime)
        };
        assert_eq!(lifetime(&forbidden), Ok(0));
        forbidden.append("cache-control", HeaderValue::from_static("public"));
        assert_eq!(lifetime(&forbidden), Ok(100 * S));
    }

    #[test]
    fn current_age_is_the_corrected_initial_age_plus_resident_time() {
        // §4.2.3: apparent age 30 s (Date 30 s before receipt), Age 10 + 2 s of delay = 12 s:
        // the larger, 30 s, then the time resident.
        let exchange = Exchange {
            request_time: 998 * S,
            response_time: 1000 * S,
            response_wall: WALL + 30,
        };
        let response = [
            ("cache-control", "max-age=100"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("age", "10"),
        ];
        let f = store_with(&SHARED, &[], &response, exchange).unwrap();
        assert_eq!(f.initial_age, 30 * S);
        assert_eq!(f.age(1005 * S), 35 * S);
        // An Age larger than the apparent age wins.
        let response = [("cache-control", "max-age=100"), ("age", "50")];
        let f = store_with(&SHARED, &[], &response, exchange).unwrap();
        assert_eq!(f.initial_age, 52 * S);
        // A Date in the future (a fast origin clock) gives no negative age.
        let exchange = Exchange {
            response_wall: WALL - 30,
            ..AT
        };
        let response = [
            ("cache-control", "max-age=100"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ];
        assert_eq!(
            store_with(&SHARED, &[], &response, exchange)
                .unwrap()
                .initial_age,
            0
        );
    }

    #[test]
    fn what_is_never_stored() {
        assert_eq!(
            store(&[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store_with(
                &SHARED,
                &[("cache-control", "no-store")],
                &[("cache-control", "max-age=60")],
                AT
            ),
            Err(NotStored::RequestNoStore),
            "request no-store (§5.2.1.5)"
        );
        assert_eq!(
            store(&[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert!(
            store_with(
                &PRIVATE,
                &[],
                &[("cache-control", "private, max-age=60")],
                AT
            )
            .is_ok()
        );
        assert_eq!(
            store(&[("cache-control", "max-age=60"), ("vary", "*")]),
            Err(NotStored::Vary)
        );
        assert_eq!(
            store(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]),
            Err(NotStored::SetCookie)
        );
        let cookies = Rules {
            store_set_cookie: true,
            ..SHARED
        };
        assert!(
            store_with(
                &cookies,
                &[],
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
                AT
            )
            .is_ok()
        );
        assert_eq!(
            store(&[]),
            Err(NotStored::Useless),
            "no freshness, no validator"
        );
        assert!(
            store(&[("etag", "\"v\"")]).is_ok(),
            "a validator makes revalidation possible"
        );
    }

    #[test]
    fn explicit_freshness_alone_makes_any_kept_status_storable_rfc_9111_3() {
        let none = HeaderMap::new();
        let d = RequestDirectives::default();
        let forbidden = |rules: &Rules, lines: &[(&'static str, &'static str)]| {
            storable(
                rules,
                &Method::GET,
                &none,
                &d,
                StatusCode::FORBIDDEN,
                &headers(lines),
                AT,
            )
        };
        assert!(forbidden(&SHARED, &[("cache-control", "max-age=60")]).is_ok());
        assert!(forbidden(&SHARED, &[("cache-control", "s-maxage=60")]).is_ok());
        assert!(forbidden(&SHARED, &[("expires", "Sun, 06 Nov 1994 08:50:37 GMT")]).is_ok());
        assert!(forbidden(&SHARED, &[("cache-control", "public"), ("etag", "\"v\"")]).is_ok());
        assert!(forbidden(&PRIVATE, &[("cache-control", "private"), ("etag", "\"v\"")]).is_ok());
        assert_eq!(
            forbidden(&PRIVATE, &[("cache-control", "s-maxage=60")]),
            Err(NotStored::Useless),
            "s-maxage means nothing to a private cache"
        );
        assert_eq!(
            forbidden(&PRIVATE, &[("etag", "\"v\"")]),
            Err(NotStored::Useless),
            "a validator alone allows nothing"
        );
        // A heuristic lifetime opens the builder's windows too.
        let heuristic = Rules {
            heuristic: Some(0.1),
            stale_if_error: 600 * S,
            ..SHARED
        };
        let modified = [
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("last-modified", "Sun, 06 Nov 1994 08:32:57 GMT"),
        ];
        let f = store_with(&heuristic, &[], &modified, AT).unwrap();
        assert_eq!((f.lifetime, f.stale_if_error), (100 * S, 600 * S));
        // An explicit lifetime of zero still opens the builder's windows: the origin spoke.
        let windows = Rules {
            stale_while_revalidate: 60 * S,
            ..SHARED
        };
        let f = store_with(&windows, &[], &[("cache-control", "max-age=0")], AT).unwrap();
        assert_eq!((f.lifetime, f.stale_while_revalidate), (0, 60 * S));
        let f = store_with(
            &windows,
            &[],
            &[("expires", "Sun, 06 Nov 1994 08:49:37 GMT")],
            AT,
        )
        .unwrap();
        assert_eq!((f.lifetime, f.stale_while_revalidate), (0, 60 * S));
    }

    #[test]
    fn credentials_need_the_responses_leave_in_a_shared_cache() {
        // RFC 9111 §3.5.
        let auth = [("authorization", "Bearer x")];
        let plain = [("cache-control", "max-age=60")];
        assert_eq!(
            store_with(&SHARED, &auth, &plain, AT),
            Err(NotStored::Credentials)
        );
        assert_eq!(
            store_with(&SHARED, &[("cookie", "s=1")], &plain, AT),
            Err(NotStored::Credentials)
        );
        for leave in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            let response = [("cache-control", leave)];
            let request = headers(&auth);
            let stored = storable(
                &SHARED,
                &Method::GET,
                &request,
                &RequestDirectives::parse(&request),
                StatusCode::OK,
                &headers(&response),
                AT,
            );
            assert!(stored.is_ok(), "{leave}");
        }
        assert!(
            store_with(&PRIVATE, &auth, &plain, AT).is_ok(),
            "a private cache stores it"
        );
    }

    #[test]
    fn only_get_and_complete_non_server_error_statuses_are_stored() {
        let response = headers(&[("cache-control", "max-age=60")]);
        let none = HeaderMap::new();
        let d = RequestDirectives::default();
        let with = |method: &Method, status: u16| {
            storable(
                &SHARED,
                method,
                &none,
                &d,
                StatusCode::from_u16(status).unwrap(),
                &response,
                AT,
            )
        };
        assert_eq!(with(&Method::HEAD, 200), Err(NotStored::Method));
        assert_eq!(with(&Method::POST, 200), Err(NotStored::Method));
        for status in [206, 304, 500, 503] {
            assert_eq!(
                with(&Method::GET, status),
                Err(NotStored::Status),
                "{status}"
            );
        }
        for status in [200, 203, 301, 404, 410] {
            assert!(with(&Method::GET, status).is_ok(), "{status}");
        }
    }

    #[test]
    fn windows_come_from_the_response_then_the_defaults_and_revalidation_closes_them() {
        // RFC 5861 §3 and §4.
        let f = store(&[(
            "cache-control",
            "max-age=1, stale-while-revalidate=5, stale-if-error=50",
        )])
        .unwrap();
        assert_eq!(
            (f.stale_while_revalidate, f.stale_if_error),
            (5 * S, 50 * S)
        );
        let defaults = Rules {
            stale_while_revalidate: 7 * S,
            stale_if_error: 70 * S,
            ..SHARED
        };
        let f = store_with(&defaults, &[], &[("cache-control", "max-age=1")], AT).unwrap();
        assert_eq!(
            (f.stale_while_revalidate, f.stale_if_error),
            (7 * S, 70 * S)
        );
        let f = store_with(
            &defaults,
            &[],
            &[("cache-control", "max-age=1, stale-if-error=0")],
            AT,
        )
        .unwrap();
        assert_eq!(
            f.stale_if_error, 0,
            "the response's own 0 wins over the default"
        );
        for closed in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "s-maxage=1",
            "max-age=1, no-cache",
        ] {
            let f = store_with(
                &defaults,
                &[],
                &[("cache-control", closed), ("etag", "\"v\"")],
                AT,
            )
            .unwrap();
            assert_eq!(
                (f.stale_while_revalidate, f.stale_if_error),
                (0, 0),
                "{closed}"
            );
        }
        let f = store_with(
            &PRIVATE,
            &[],
            &[(
                "cache-control",
                "max-age=1, proxy-revalidate, stale-if-error=9",
            )],
            AT,
        )
        .unwrap();
        assert!(
            !f.revalidate,
            "proxy-revalidate binds shared caches only (§5.2.2.8)"
        );
    }

    fn fresh_for(lifetime: u64) -> Freshness {
        Freshness {
            lifetime,
            initial_age: 0,
            response_time: 0,
            stale_while_revalidate: 10 * S,
            stale_if_error: 100 * S,
            revalidate: false,
            no_cache: false,
        }
    }

    fn req(cc: &'static str) -> RequestDirectives {
        RequestDirectives::parse(&headers(&[("cache-control", cc)]))
    }

    #[test]
    fn reuse_moves_from_fresh_to_stale_to_forwarded_at_each_boundary() {
        let f = fresh_for(60 * S);
        let none = RequestDirectives::default();
        assert_eq!(reuse(&f, 60 * S - MS, &none), Reuse::Fresh);
        assert_eq!(reuse(&f, 60 * S, &none), Reuse::Stale { refresh: true });
        assert_eq!(
            reuse(&f, 70 * S - MS, &none),
            Reuse::Stale { refresh: true }
        );
        assert_eq!(reuse(&f, 70 * S, &none), Reuse::Forward(Forward::Stale));
        assert!(f.covers_error(160 * S - MS));
        assert!(!f.covers_error(160 * S));
    }

    #[test]
    fn request_directives_narrow_or_widen_what_is_reused() {
        // RFC 9111 §5.2.1.
        let f = fresh_for(60 * S);
        assert_eq!(
            reuse(&f, 0, &req("no-cache")),
            Reuse::Forward(Forward::Request)
        );
        assert_eq!(reuse(&f, 10 * S, &req("max-age=10")), Reuse::Fresh);
        assert_eq!(
            reuse(&f, 10 * S + MS, &req("max-age=10")),
            Reuse::Forward(Forward::Request)
        );
        assert_eq!(reuse(&f, 50 * S, &req("min-fresh=10")), Reuse::Fresh);
        assert_eq!(
            reuse(&f, 50 * S + MS, &req("min-fresh=10")),
            Reuse::Forward(Forward::Request)
        );
        assert_eq!(
            reuse(&f, 65 * S, &req("min-fresh=1")),
            Reuse::Forward(Forward::Stale)
        );
        assert_eq!(
            reuse(&f, 80 * S, &req("max-stale=20")),
            Reuse::Stale { refresh: false }
        );
        assert_eq!(
            reuse(&f, 80 * S + MS, &req("max-stale=20")),
            Reuse::Forward(Forward::Stale)
        );
        assert_eq!(
            reuse(&f, 1_000_000 * S, &req("max-stale")),
            Reuse::Stale { refresh: false }
        );
    }

    #[test]
    fn revalidation_directives_forbid_every_stale_use() {
        // §5.2.2.2 and §5.2.2.4.
        let must = Freshness {
            revalidate: true,
            ..fresh_for(60 * S)
        };
        assert_eq!(
            reuse(&must, 59 * S, &RequestDirectives::default()),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(&must, 60 * S, &req("max-stale")),
            Reuse::Forward(Forward::Stale)
        );
        assert!(!must.covers_error(60 * S));
        let no_cache = Freshness {
            no_cache: true,
            ..fresh_for(60 * S)
        };
        assert_eq!(
            reuse(&no_cache, 0, &RequestDirectives::default()),
            Reuse::Forward(Forward::Stale)
        );
        assert!(!no_cache.covers_error(61 * S));
    }

    #[test]
    fn ttl_is_whole_seconds_rounded_away_from_zero_once_stale() {
        let f = fresh_for(60 * S);
        assert_eq!(f.ttl_seconds(0), 60);
        assert_eq!(f.ttl_seconds(59 * S + 1), 0);
        assert_eq!(f.ttl_seconds(60 * S), 0);
        assert_eq!(f.ttl_seconds(60 * S + 1), -1);
        assert_eq!(f.ttl_seconds(65 * S), -5);
        let aged = Freshness {
            initial_age: 20 * S,
            response_time: 5,
            ..f
        };
        assert_eq!(aged.fresh_until(), 5 + 40 * S);
    }
}
