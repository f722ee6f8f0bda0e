//! The sign-in email.

use chrono::{DateTime, Utc};
use url::Url;

use crate::email::NewEmail;
use crate::html::escape;

pub fn sign_in_email(
    to: &str,
    link: &Url,
    code: &str,
    expires_at: DateTime<Utc>,
    ttl_minutes: u32,
) -> NewEmail {
    let spaced_code = format!("{} {}", &code[..3], &code[3..]);
    let expiry = expires_at.format("%H:%M UTC");
    let text = format!(
        "Sign in to AIde by opening this link:\n\n{link}\n\n\
         Reading this on another device? Enter this code where you asked to sign in:\n\n    {spaced_code}\n\n\
         The link and the code work once, for {ttl_minutes} minutes (until {expiry}).\n\
         If you did not ask to sign in, ignore this email: nothing happens without the link or the code.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;line-height:1.5\">\
         <h1 style=\"font-size:20px\">Sign in to AIde</h1>\
         <p><a href=\"{href}\" style=\"display:inline-block;padding:10px 18px;background:#222;color:#fff;text-decoration:none;border-radius:4px\">Sign in</a></p>\
         <p>Reading this on another device? Enter this code where you asked to sign in:</p>\
         <p style=\"font-size:24px;letter-spacing:4px\"><strong>{spaced_code}</strong></p>\
         <p style=\"color:#666\">The link and the code work once, for {ttl_minutes} minutes (until {expiry}). \
         If you did not ask to sign in, ignore this email.</p>\
         <p style=\"color:#666;font-size:12px\">Or paste this address into your browser: {shown}</p>\
         </body></html>",
        href = escape(link.as_str()),
        shown = escape(link.as_str()),
    );
    NewEmail {
        kind: "sign_in",
        to: to.to_string(),
        subject: "Your AIde sign-in link".to_string(),
        html,
        text,
        deliver_before: Some(expires_at),
    }
}
