//! The HTML templates, compiled into the binary. File names end in `.html`, so minijinja
//! escapes every interpolated value: user text cannot inject markup.

use minijinja::Environment;

const TEMPLATES: [(&str, &str); 9] = [
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("register.html", include_str!("../templates/register.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("sessions.html", include_str!("../templates/sessions.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("confirm.html", include_str!("../templates/confirm.html")),
    ("password.html", include_str!("../templates/password.html")),
    ("delete.html", include_str!("../templates/delete.html")),
];

/// The template environment, every template parsed (a syntax error fails at start-up).
pub(crate) fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    #[test]
    fn user_text_is_escaped() {
        let env = super::environment().unwrap();
        let html = env
            .get_template("error.html")
            .unwrap()
            .render(context! {
                title => "<b>t</b>",
                message => "<script>alert(1)</script>",
                user => None::<String>,
                flashes => Vec::<String>::new(),
                csrf_field => "",
                csrf_token => "",
            })
            .unwrap();
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
