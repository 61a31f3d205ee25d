//! The Orchestrator server: HTTP API (axum + utoipa), configuration, start-up.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod dto;
pub mod error;
pub mod events;
pub mod graph;
pub mod listener;
pub mod logs;
pub mod models_api;
pub mod observability;
pub mod views;
pub mod webhooks_api;

pub use app::{AppState, RunningServer, openapi, router, start};
