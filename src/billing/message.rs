//! The email sent when a payment fails. It names no amount, card or Stripe id, and holds no link
//! that signs anyone in: it sends the person to the app, where they sign in as usual.

use chrono::Utc;

use super::repo::Plan;
use crate::config::BillingConfig;
use crate::email::NewEmail;
use crate::html::escape;
use crate::state::AppState;

pub fn payment_failed(state: &AppState, to: &str, plan: &Plan, config: &BillingConfig) -> NewEmail {
    let app = state.config.app_url.as_str();
    let until = match (plan.tier.is_pro(), plan.past_due_since) {
        (true, Some(since)) => {
            let end = since
                + chrono::Duration::from_std(config.past_due_grace).unwrap_or_default();
            format!("AIde Pro stays on until {}.", end.format("%B %-d, %Y"))
        }
        (true, None) => "AIde Pro stays on while Stripe tries again.".to_string(),
        (false, _) => {
            "Your account is on the free plan until the payment goes through; nothing has been deleted."
                .to_string()
        }
    };
    let text = format!(
        "Your latest payment for AIde Pro did not go through.\n\n{until}\n\n\
         To fix it, sign in at {app} and choose \"Manage billing\" on your account page to update your card.\n\
         If you meant to stop Pro, there is nothing to do: your pages and data stay.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;line-height:1.5\">\
         <h1 style=\"font-size:20px\">Your AIde Pro payment did not go through</h1>\
         <p>{until}</p>\
         <p>To fix it, <a href=\"{href}\">sign in to AIde</a> and choose \"Manage billing\" on your account page to update your card.</p>\
         <p style=\"color:#666\">If you meant to stop Pro, there is nothing to do: your pages and data stay.</p>\
         </body></html>",
        until = escape(&until),
        href = escape(app),
    );
    NewEmail {
        kind: "payment_failed",
        to: to.to_string(),
        subject: "Your AIde Pro payment did not go through".to_string(),
        html,
        text,
        // Worth reading for a week; past that, a newer one has been sent or the grace is over.
        deliver_before: Some(Utc::now() + chrono::Duration::days(7)),
    }
}
