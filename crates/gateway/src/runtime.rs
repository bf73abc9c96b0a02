//! One generation of the running config: the validated config, compiled routes and upstreams.
//!
//! The data path loads the current generation once per request (`ArcSwap::load_full`) and uses
//! it to the end of that request, so a reload swaps everything at once and in-flight requests
//! finish on the generation they started with.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bridgehead_config::LoadedConfig;

use crate::access_log::AccessLog;
use crate::auth::{Authenticators, JwksSources};
use crate::policy::RedisHandle;
use crate::policy::idempotency::{Backend, IdempotencyPolicy};
use crate::policy::ratelimit::RouteLimits;
use crate::router::{Backend as RouteBackend, RoutePolicies, Router};
use bridgehead_http::metrics::{Metrics, Name, RouteLabels};
use bridgehead_upstream::{Carryover, Upstream, health};

/// A compiled config generation.
pub struct Runtime {
    pub loaded: Arc<LoadedConfig>,
    pub router: Router,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub auth: Authenticators,
    /// JWKS URL sources, shared with the next generation so a reload does not refetch them.
    pub jwks: JwksSources,
    /// 1 for the config loaded at start, +1 per successful reload.
    pub generation: u64,
    /// The webhook receivers (`webhooks.inbound`), in config order.
    pub receivers: Vec<Arc<bridgehead_webhooks::inbound::Receiver>>,
    /// The outbound dispatcher (`webhooks.outbound`), when configured.
    pub dispatcher: Option<Arc<bridgehead_webhooks::outbound::Dispatcher>>,
    /// The gRPC services (`grpc.services`), by name.
    pub grpc: BTreeMap<String, Arc<bridgehead_grpc::service::Service>>,
    /// The SOAP services (`soap.services`), by name.
    pub soap: BTreeMap<String, Arc<bridgehead_soap::service::Service>>,
    /// Starts each request's trace, when `telemetry.traces` is on (see [`Runtime::traced`]).
    pub tracer: Option<bridgehead_http::trace::Tracer>,
}

impl Runtime {
    /// Compiles `loaded`, carrying target health, pooled clients and fetched key sets over from
    /// `previous`, and starts health checkers for the new upstreams. Fails when an
    /// authenticator's key material is unusable. Must run inside a tokio runtime; call
    /// [`Authenticators::ready`] before serving it.
    pub fn build(
        loaded: LoadedConfig,
        previous: Option<&Runtime>,
        metrics: &Metrics,
        store: Option<&bridgehead_state::Store>,
        oauth: Option<&Arc<bridgehead_oauth::OAuthServer>>,
        redis: Option<&RedisHandle>,
    ) -> Result<Self, bridgehead_config::BuildError> {
        for w in &loaded.warnings {
            tracing::warn!(warning = %w, "config warning");
        }
        let jwks = previous.map(|p| p.jwks.clone()).unwrap_or_default();
        let auth = Authenticators::build(&loaded, &jwks, store, metrics, oauth)?;
        let carry = previous.map(|p| Carryover::from_upstreams(p.upstreams.values())).unwrap_or_default();
        let upstreams: BTreeMap<String, Arc<Upstream>> = loaded
            .config
            .upstreams
            .iter()
            .map(|(name, cfg)| {
                let u = Upstream::build(name, cfg, &carry, &loaded, metrics, redis)?;
                Ok((name.clone(), Arc::new(u.with_metrics(metrics))))
            })
            .collect::<Result<_, bridgehead_config::BuildError>>()?;
        for u in upstreams.values() {
            health::spawn(u);
        }
        let grpc: BTreeMap<String, Arc<bridgehead_grpc::service::Service>> = loaded
            .config
            .grpc
            .services
            .iter()
            .map(|(name, cfg)| {
                let prev = previous.and_then(|p| p.grpc.get(name)).map(|s| &**s);
                let svc = bridgehead_grpc::service::Service::build(
                    name,
                    cfg,
                    &loaded,
                    upstreams[&cfg.upstream].clone(),
                    prev,
                )?;
                Ok((name.clone(), Arc::new(svc)))
            })
            .collect::<Result<_, bridgehead_config::BuildError>>()?;
        let soap: BTreeMap<String, Arc<bridgehead_soap::service::Service>> = loaded
            .config
            .soap
            .services
            .iter()
            .map(|(name, cfg)| {
                let prev = previous.and_then(|p| p.soap.get(name)).map(|s| &**s);
                let svc = bridgehead_soap::service::Service::build(
                    name,
                    cfg,
                    &loaded,
                    upstreams[&cfg.upstream].clone(),
                    prev,
                )?;
                Ok((name.clone(), Arc::new(svc)))
            })
            .collect::<Result<_, bridgehead_config::BuildError>>()?;
        let receivers: Vec<_> =
            bridgehead_webhooks::inbound::Receiver::build_all(&loaded)?.into_iter().map(Arc::new).collect();
        let dispatcher = bridgehead_webhooks::outbound::Dispatcher::build(
            &loaded,
            previous.and_then(|p| p.dispatcher.as_deref()),
        )?
        .map(Arc::new);
        let intake_auth = loaded
            .config
            .webhooks
            .outbound
            .as_ref()
            .and_then(|o| auth.for_names(&o.auth, &o.require_scopes, false));
        let router = Router::new(
            &loaded.config.routes,
            loaded.config.oauth_server.is_some(),
            |route| match (&route.grpc_transcode, &route.soap, &route.upstream) {
                (Some(t), _, _) => RouteBackend::Transcode(Arc::new(
                    bridgehead_grpc::transcode::Transcoder::new(grpc[&t.service].clone(), route),
                )),
                (None, Some(t), _) => RouteBackend::Soap(Arc::new(bridgehead_soap::route::SoapRoute::new(
                    soap[&t.service].clone(),
                    route.matcher.path_prefix.as_deref().unwrap_or_default(),
                ))),
                (None, None, Some(u)) => RouteBackend::Proxy(upstreams[u].clone()),
                (None, None, None) => unreachable!("validation requires upstream, grpc_transcode or soap"),
            },
            |route| metrics.http_duration.get_or_create(&RouteLabels { route: Name(route.clone()) }).clone(),
            |route| auth.for_route(route),
            |route, name| RoutePolicies {
                rate_limit: route.rate_limit.as_ref().map(|rl| {
                    let prev = previous
                        .and_then(|p| p.router.routes().find(|r| r.name == *name))
                        .and_then(|r| r.rate_limit.as_ref());
                    RouteLimits::new(
                        name,
                        rl.policies(),
                        &route.rate_limit_headers,
                        redis.cloned(),
                        metrics,
                        prev,
                    )
                }),
                idempotency: route.idempotency.as_ref().and_then(|cfg| {
                    let backend = match (redis, store) {
                        (Some(r), _) => Backend::Redis(r.clone()),
                        (None, Some(s)) => Backend::Store(s.clone()),
                        (None, None) => return None,
                    };
                    // The longest a request can hold its key: every try's wait in the outbound
                    // queue, the request deadline (which covers all tries), and a token fetch.
                    // A transcoding route's upstream is its gRPC service's.
                    let upstream = route
                        .upstream
                        .as_deref()
                        .or_else(|| {
                            let t = route.grpc_transcode.as_ref()?;
                            Some(loaded.config.grpc.services.get(&t.service)?.upstream.as_str())
                        })
                        .or_else(|| {
                            let t = route.soap.as_ref()?;
                            Some(loaded.config.soap.services.get(&t.service)?.upstream.as_str())
                        })?;
                    let up = &loaded.config.upstreams[upstream];
                    let tries = up.retry.as_ref().map_or(1, |r| r.attempts);
                    let queue =
                        up.rate_limit.as_ref().map_or(std::time::Duration::ZERO, |r| r.max_wait.get());
                    let token = match &up.credentials {
                        Some(bridgehead_config::Credentials::Oauth2ClientCredentials(c)) => c.timeout.get(),
                        _ => std::time::Duration::ZERO,
                    };
                    // Plus a second request timeout for reading the response body, and one more
                    // queue wait for a fresh-token retry.
                    let lease = up.timeouts.request.get() * 2 + queue * (tries + 1) + token;
                    Some(IdempotencyPolicy::new(name, cfg, lease, backend))
                }),
            },
        )
        .with_webhooks(&receivers, |name| {
            metrics.http_duration.get_or_create(&RouteLabels { route: Name(name.clone()) }).clone()
        })
        .with_intake(dispatcher.as_ref(), intake_auth, |name| {
            metrics.http_duration.get_or_create(&RouteLabels { route: Name(name.clone()) }).clone()
        });
        Ok(Self {
            receivers,
            dispatcher,
            grpc,
            soap,
            loaded: Arc::new(loaded),
            router,
            upstreams,
            auth,
            jwks,
            generation: previous.map_or(1, |p| p.generation + 1),
            tracer: None,
        })
    }

    /// This generation with its tracer: the running exporter, with this config's sampler.
    #[must_use]
    pub fn traced(mut self, exporter: Option<&Arc<bridgehead_telemetry::Exporter>>) -> Self {
        self.tracer = match (exporter, &self.loaded.config.telemetry.traces) {
            (Some(e), Some(t)) => Some(e.tracer(t)),
            _ => None,
        };
        self
    }

    /// Reads the run-time webhook endpoints and their state from the store (see
    /// [`bridgehead_webhooks::outbound::Dispatcher::refresh`]); a failure is logged and the
    /// endpoints stay as they were.
    pub async fn refresh_endpoints(&self, store: Option<&bridgehead_state::Store>) {
        if let (Some(d), Some(store)) = (&self.dispatcher, store)
            && let Err(e) = d.refresh(store).await
        {
            tracing::warn!(error = %e, "webhook endpoints could not be read from the state store");
        }
    }

    /// Loads the reflected schemas and the fetched WSDLs not carried over from the previous
    /// generation (from the server, or else the state store's copy). Fails, naming the
    /// service, when one has none: before this generation serves.
    pub async fn grpc_ready(
        &self,
        metrics: &Metrics,
        store: Option<&bridgehead_state::Store>,
    ) -> Result<(), bridgehead_config::BuildError> {
        for svc in self.grpc.values() {
            svc.ensure(metrics, store).await?;
        }
        for svc in self.soap.values() {
            svc.ensure(store, svc.upstream.timeouts.request.get()).await?;
        }
        Ok(())
    }

    /// Upstreams that at least one route sends traffic to.
    pub fn upstreams_in_use(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams
            .values()
            .filter(|u| self.router.routes().any(|r| r.upstream().is_some_and(|ru| Arc::ptr_eq(ru, u))))
    }
}

/// State shared by the data plane, the admin plane and the reloader.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub store: Option<bridgehead_state::Store>,
    /// The built-in authorization server, when `oauth_server` is configured.
    pub oauth: arc_swap::ArcSwapOption<bridgehead_oauth::OAuthServer>,
    /// Redis for shared rate limits and idempotency records, when `state.redis` is set.
    pub redis: Option<RedisHandle>,
    /// `server.limits.max_buffered`, in KiB permits.
    pub buffers: bridgehead_http::body::BufferBudget,
    /// Wakes the webhook delivery worker when a receiver has committed a message.
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// Asks the endpoint refresher to read the webhook endpoints from the store now (an admin
    /// change, an endpoint disabled for a 410).
    pub endpoints_changed: Arc<tokio::sync::Notify>,
    /// The trace exporter, when `telemetry.traces` was on at start.
    pub exporter: Option<Arc<bridgehead_telemetry::Exporter>>,
}
