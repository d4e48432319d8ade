//! The built-in credential rules: vendor token formats (cloud, VCS, package
//! registries, payment, messaging, AI vendors), private keys, JWTs,
//! connection strings with passwords, credential assignments, and financial
//! and crypto identifiers whose checksums are verified ([`super::checksum`]).
//!
//! Shapes are facts taken from the vendors' documentation and from how the
//! open scanners (gitleaks, trufflehog, secrets-patterns-db) describe them;
//! no rule text is copied. Each rule has a name (what a finding reports,
//! never the matched bytes), a severity, the keywords that make the
//! aho-corasick prefilter run it (none: it runs on everything), the regex
//! (`(?-u)` keeps it on bytes), the request parts it applies to, and a check
//! of what it matched.

use super::checksum;
pub use super::shapes::Shape;

/// How bad a finding is; reported in audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look (a credential-like assignment).
    Medium,
    /// Very likely a credential or personal financial data.
    High,
    /// A vendor token whose format or checksum leaves no doubt.
    Critical,
}

impl Severity {
    /// The lower-case name written to audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Which request parts a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// URL, headers and body.
    All,
    /// Header values only (e.g. `Basic` credentials).
    Header,
}

/// What is verified on a match before it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The match is enough.
    None,
    /// GitHub/npm CRC32 suffix: a valid one raises the severity to critical.
    GithubCrc,
    /// The captured value must look like a real secret, not a reference,
    /// a type or a placeholder word.
    AssignedValue,
    /// Luhn and a known card-brand prefix and length.
    Card,
    /// ISO 13616 mod-97.
    Iban,
    /// Base58Check: legacy Bitcoin address or WIF private key.
    Base58Check,
    /// Base58Check of an extended private key.
    ExtendedKey,
    /// bech32/bech32m checksum.
    Bech32,
    /// Long and varied enough to be a generated token, not a word.
    RandomToken,
    /// Both: an assigned value that is a generated token (for names that
    /// name keys of every kind, `cache_key` as well as `ENCRYPTION_KEY`).
    RandomAssignedValue,
}

/// One built-in rule.
#[derive(Debug)]
pub struct Rule {
    /// Reported in findings.
    pub name: &'static str,
    /// How bad a match is.
    pub severity: Severity,
    /// Case-insensitive literals one of which must be in the data for the
    /// rule to run; empty: always runs.
    pub keywords: &'static [&'static str],
    /// The shape; group 1 (or 2, for an alternative), if any, is what
    /// [`Rule::check`] looks at.
    pub regex: &'static str,
    /// Where it applies.
    pub parts: Parts,
    /// What is verified on a match.
    pub check: Check,
    /// For rules without keywords: the shape whose candidate spans
    /// ([`super::shapes`]) the regex runs on, instead of the whole data.
    pub shape: Option<Shape>,
    /// For rules whose keywords are common words (`token`, `://`): a regex
    /// run right after each keyword hit instead of `regex` over the whole
    /// data (`regex` still documents the full shape).
    pub anchor: Option<&'static str>,
    /// For anchored rules: a cheap test of the bytes right after a keyword
    /// that every `anchor` match passes, so that most keyword hits (common
    /// words) are turned down without running the regex.
    pub anchor_gate: Option<fn(&[u8]) -> bool>,
}

const fn rule(
    name: &'static str,
    severity: Severity,
    keywords: &'static [&'static str],
    regex: &'static str,
) -> Rule {
    Rule {
        name,
        severity,
        keywords,
        regex,
        parts: Parts::All,
        check: Check::None,
        shape: None,
        anchor: None,
        anchor_gate: None,
    }
}

const fn checked(
    name: &'static str,
    severity: Severity,
    keywords: &'static [&'static str],
    regex: &'static str,
    check: Check,
) -> Rule {
    Rule {
        name,
        severity,
        keywords,
        regex,
        parts: Parts::All,
        check,
        shape: None,
        anchor: None,
        anchor_gate: None,
    }
}

use Severity::{Critical, High, Medium};

/// The rule table, see the module docs.
pub const BUILTIN_RULES: &[Rule] = &[
    // Cloud providers.
    rule(
        "aws-access-key-id",
        Critical,
        &["akia", "asia", "abia", "acca", "a3t"],
        r"(?-u)\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
    ),
    checked(
        "aws-secret-access-key",
        Critical,
        &["secret_access_key", "secretaccesskey", "aws_secret"],
        r#"(?i-u)(?:aws_?secret_?access_?key|aws_?secret|secret_?access_?key)["']?\s*(?:[:=]|=>)\s*["']?([A-Za-z0-9/+=]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        Check::None,
    ),
    rule(
        "google-api-key",
        High,
        &["aiza"],
        r"(?-u)\bAIza[0-9A-Za-z_\-]{35}(?:[^0-9A-Za-z_\-]|$)",
    ),
    rule(
        "google-oauth-client-secret",
        Critical,
        &["gocspx-"],
        r"(?-u)GOCSPX-[A-Za-z0-9_\-]{28}",
    ),
    rule(
        "google-oauth-access-token",
        High,
        &["ya29."],
        r"(?-u)\bya29\.[A-Za-z0-9_\-]{30,}",
    ),
    rule(
        "gcp-service-account",
        High,
        &["service_account"],
        r#"(?-u)"type\\*"(?:\s|\\[nrt])*:(?:\s|\\[nrt])*\\*"service_account\\*""#,
    ),
    rule(
        "azure-storage-account-key",
        Critical,
        &["accountkey="],
        r"(?i-u)AccountKey=[A-Za-z0-9+/]{86}==",
    ),
    rule(
        "azure-ad-client-secret",
        High,
        &["q~"],
        r"(?-u)(?:^|[^A-Za-z0-9_~.\-])[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34}(?:[^A-Za-z0-9_~.\-]|$)",
    ),
    rule(
        "alibaba-access-key-id",
        High,
        &["ltai"],
        r"(?-u)\bLTAI[A-Za-z0-9]{12,20}\b",
    ),
    rule(
        "tencent-secret-id",
        High,
        &["akid"],
        r"(?-u)\bAKID[A-Za-z0-9]{32}\b",
    ),
    rule(
        "digitalocean-token",
        Critical,
        &["dop_v1_", "doo_v1_", "dor_v1_"],
        r"(?-u)do[opr]_v1_[a-f0-9]{64}",
    ),
    rule(
        "databricks-token",
        High,
        &["dapi"],
        r"(?-u)\bdapi[a-f0-9]{32}(?:-[0-9])?\b",
    ),
    rule(
        "heroku-api-key",
        Critical,
        &["hrku-"],
        r"(?-u)HRKU-[A-Za-z0-9_\-]{40,}",
    ),
    rule(
        "flyio-token",
        Critical,
        &["fo1_", "fm2_"],
        r"(?-u)\b(?:fo1_[A-Za-z0-9_\-]{43}|fm2_[A-Za-z0-9+/=_\-]{100,})",
    ),
    rule(
        "vault-token",
        High,
        &["hvs.", "hvb."],
        r"(?-u)\bhv[sb]\.[A-Za-z0-9_\-]{24,}",
    ),
    rule(
        "terraform-cloud-token",
        Critical,
        &[".atlasv1."],
        r"(?-u)[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{60,}",
    ),
    rule(
        "doppler-token",
        Critical,
        &["dp.pt.", "dp.st.", "dp.sa.", "dp.ct."],
        r"(?-u)\bdp\.(?:pt|st|sa|ct)\.[A-Za-z0-9]{40,}",
    ),
    rule(
        "pulumi-token",
        Critical,
        &["pul-"],
        r"(?-u)\bpul-[a-f0-9]{40}\b",
    ),
    rule(
        "planetscale-token",
        Critical,
        &["pscale_"],
        r"(?-u)pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_\-.=]{32,64}",
    ),
    rule(
        "supabase-token",
        Critical,
        &["sbp_", "sb_secret_"],
        r"(?-u)\b(?:sbp_[a-f0-9]{40}\b|sb_secret_[A-Za-z0-9_\-]{24,})",
    ),
    // Version control and package registries.
    checked(
        "github-pat",
        High,
        &["ghp_"],
        r"(?-u)ghp_[0-9A-Za-z]{30,251}",
        Check::GithubCrc,
    ),
    checked(
        "github-oauth-token",
        High,
        &["gho_"],
        r"(?-u)gho_[0-9A-Za-z]{30,251}",
        Check::GithubCrc,
    ),
    checked(
        "github-user-to-server-token",
        High,
        &["ghu_"],
        r"(?-u)ghu_[0-9A-Za-z]{30,251}",
        Check::GithubCrc,
    ),
    checked(
        "github-server-to-server-token",
        High,
        &["ghs_"],
        r"(?-u)ghs_[0-9A-Za-z]{30,251}",
        Check::GithubCrc,
    ),
    checked(
        "github-refresh-token",
        High,
        &["ghr_"],
        r"(?-u)ghr_[0-9A-Za-z]{30,251}",
        Check::GithubCrc,
    ),
    rule(
        "github-fine-grained-pat",
        Critical,
        &["github_pat_"],
        r"(?-u)github_pat_[0-9A-Za-z_]{70,255}",
    ),
    rule(
        "gitlab-pat",
        Critical,
        &["glpat-"],
        r"(?-u)glpat-[0-9A-Za-z_\-]{20,}",
    ),
    rule(
        "gitlab-token",
        Critical,
        &[
            "gldt-",
            "glrt-",
            "glptt-",
            "glcbt-",
            "glft-",
            "glsoat-",
            "gloas-",
            "glimt-",
            "glagent-",
            "gr1348941",
        ],
        r"(?-u)(?:gl(?:dt|rt|ptt|cbt|ft|soat|oas|imt|agent)-[0-9A-Za-z_\-]{20,}|GR1348941[0-9A-Za-z_\-]{20})",
    ),
    rule(
        "atlassian-api-token",
        Critical,
        &["atatt3", "atbb"],
        r"(?-u)(?:ATATT3[A-Za-z0-9_\-=]{100,}|\bATBB[A-Za-z0-9]{28,})",
    ),
    checked(
        "npm-token",
        High,
        &["npm_"],
        r"(?-u)\bnpm_[0-9A-Za-z]{36}\b",
        Check::GithubCrc,
    ),
    rule(
        "pypi-token",
        Critical,
        &["pypi-ageichlwas5vcmc"],
        r"(?-u)pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}",
    ),
    rule(
        "dockerhub-pat",
        Critical,
        &["dckr_pat_"],
        r"(?-u)dckr_pat_[A-Za-z0-9_\-]{27,}",
    ),
    rule(
        "rubygems-api-key",
        Critical,
        &["rubygems_"],
        r"(?-u)rubygems_[a-f0-9]{48}",
    ),
    rule("nuget-api-key", High, &["oy2"], r"(?-u)\boy2[a-z0-9]{43}\b"),
    rule(
        "crates-io-token",
        High,
        &["cio"],
        r"(?-u)\bcio[A-Za-z0-9]{32}\b",
    ),
    // Payment.
    rule(
        "stripe-secret-key",
        Critical,
        &["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
        r"(?-u)[sr]k_(?:live|test)_[0-9A-Za-z_]{16,}",
    ),
    rule(
        "stripe-webhook-secret",
        Critical,
        &["whsec_"],
        r"(?-u)\bwhsec_[A-Za-z0-9+/]{32,}",
    ),
    rule(
        "square-token",
        Critical,
        &["sq0atp-", "sq0csp-"],
        r"(?-u)sq0(?:atp-[0-9A-Za-z_\-]{22}|csp-[0-9A-Za-z_\-]{43})",
    ),
    rule(
        "shopify-token",
        Critical,
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        r"(?-u)shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
    ),
    // Messaging and collaboration.
    rule(
        "slack-token",
        Critical,
        &["xox"],
        r"(?-u)\bxox[abposre]-[0-9A-Za-z\-]{10,}",
    ),
    rule(
        "slack-app-token",
        Critical,
        &["xapp-"],
        r"(?-u)\bxapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+",
    ),
    rule(
        "slack-webhook",
        High,
        &["hooks.slack.com"],
        r"(?-u)hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{30,}",
    ),
    rule(
        "sendgrid-api-key",
        Critical,
        &["sg."],
        r"(?-u)\bSG\.[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{30,64}",
    ),
    rule(
        "twilio-api-key",
        High,
        &["twilio"],
        r"(?-u)\bSK[0-9a-fA-F]{32}\b",
    ),
    rule(
        "mailgun-api-key",
        High,
        &["key-"],
        r"(?-u)\bkey-[0-9a-zA-Z]{32}\b",
    ),
    rule(
        "mailchimp-api-key",
        High,
        &["-us"],
        r"(?-u)\b[0-9a-f]{32}-us[0-9]{1,2}\b",
    ),
    rule(
        "discord-bot-token",
        High,
        &["discord"],
        r"(?-u)\b[MNO][A-Za-z0-9_\-]{23,25}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38}\b",
    ),
    rule(
        "discord-webhook",
        High,
        &["/api/webhooks/"],
        r"(?-u)discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_\-]{60,}",
    ),
    rule(
        "telegram-bot-token",
        High,
        &[":aa"],
        r"(?-u)\b[0-9]{8,10}:AA[A-Za-z0-9_\-]{33}\b",
    ),
    rule(
        "linear-api-key",
        Critical,
        &["lin_api_"],
        r"(?-u)lin_api_[A-Za-z0-9]{40}",
    ),
    rule(
        "notion-token",
        High,
        &["secret_", "ntn_"],
        r"(?-u)\b(?:secret_[A-Za-z0-9]{43}|ntn_[0-9]{11}[A-Za-z0-9]{35})\b",
    ),
    rule(
        "figma-token",
        Critical,
        &["figd_"],
        r"(?-u)figd_[A-Za-z0-9_\-]{40,}",
    ),
    rule(
        "postman-api-key",
        Critical,
        &["pmak-"],
        r"(?-u)PMAK-[a-f0-9]{24}-[a-f0-9]{34}",
    ),
    rule(
        "newrelic-api-key",
        High,
        &["nrak-", "nrjs-", "nrii-"],
        r"(?-u)\b(?:NRAK-[A-Z0-9]{27}|NRJS-[a-f0-9]{19}|NRII-[A-Za-z0-9_\-]{32})\b",
    ),
    rule(
        "sentry-token",
        High,
        &["sntrys_", "sntryu_"],
        r"(?-u)sntry[su]_[A-Za-z0-9+/=_]{40,}",
    ),
    rule(
        "mapbox-secret-token",
        High,
        &["sk.eyj"],
        r"(?-u)\bsk\.eyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]{20,}",
    ),
    // AI vendors.
    rule(
        "anthropic-api-key",
        Critical,
        &["sk-ant-"],
        r"(?-u)\bsk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_\-]{32,}",
    ),
    rule(
        "openai-api-key",
        Critical,
        &["sk-"],
        r"(?-u)\bsk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{32,64})\b",
    ),
    rule(
        "groq-api-key",
        Critical,
        &["gsk_"],
        r"(?-u)\bgsk_[A-Za-z0-9]{48,}",
    ),
    rule(
        "xai-api-key",
        Critical,
        &["xai-"],
        r"(?-u)\bxai-[A-Za-z0-9]{60,}",
    ),
    rule(
        "perplexity-api-key",
        Critical,
        &["pplx-"],
        r"(?-u)\bpplx-[A-Za-z0-9]{40,}",
    ),
    rule(
        "openrouter-api-key",
        Critical,
        &["sk-or-v1-"],
        r"(?-u)\bsk-or-v1-[0-9a-f]{64}\b",
    ),
    rule(
        "netlify-token",
        High,
        &["nfp_"],
        r"(?-u)\bnfp_[A-Za-z0-9]{36,}",
    ),
    rule(
        "dropbox-token",
        High,
        &["sl."],
        r"(?-u)\bsl\.(?:u\.)?[A-Za-z0-9_\-]{130,}",
    ),
    rule(
        "google-oauth-refresh-token",
        Critical,
        &["1//0"],
        r"(?-u)\b1//0[0-9A-Za-z_\-]{40,}",
    ),
    rule(
        "microsoft-teams-webhook",
        High,
        &["webhook.office.com", "outlook.office.com/webhook"],
        r"(?-u)(?:[a-z0-9\-]+\.webhook\.office\.com/webhookb2|outlook\.office\.com/webhook)/[0-9a-f\-]{36}@[0-9a-f\-]{36}/IncomingWebhook/[0-9a-f]{32}/[0-9a-f\-]{36}",
    ),
    rule(
        "docker-config-auth",
        Critical,
        &["auths\"", "auths\\"],
        r#"(?-u)"auths\\*"(?:\s|\\[nrt])*:(?:\s|\\[nrt])*\{(?:\s|\\[nrt])*\\*"[^"\\]{1,255}\\*"(?:\s|\\[nrt])*:(?:\s|\\[nrt])*\{[^}]{0,512}"auth\\*"(?:\s|\\[nrt])*:(?:\s|\\[nrt])*\\*"[A-Za-z0-9+/]{12,}={0,2}\\*""#,
    ),
    checked(
        "netrc-credentials",
        High,
        &["machine "],
        r"(?i-u)\bmachine(?:\s|\\[nrt])+[^\s\\]+(?:\s|\\[nrt])+(?:login(?:\s|\\[nrt])+[^\s\\]+(?:\s|\\[nrt])+)?password(?:\s|\\[nrt])+([^\s\\]{6,200})",
        Check::AssignedValue,
    ),
    rule(
        "password-hash",
        High,
        &[
            "$1$", "$5$", "$6$", "$apr1$", "$2a$", "$2b$", "$2y$", "$y$", "$argon2",
        ],
        r"(?-u)(?:\$(?:1|5|6|apr1)\$(?:rounds=[0-9]+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22,86}|\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}|\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{1,86}\$[./A-Za-z0-9]{43}|\$argon2(?:id|i|d)\$v=[0-9]+\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]{8,}\$[A-Za-z0-9+/]{16,})",
    ),
    rule(
        "replicate-api-token",
        Critical,
        &["r8_"],
        r"(?-u)\br8_[A-Za-z0-9]{37,}",
    ),
    rule(
        "huggingface-token",
        Critical,
        &["hf_", "api_org_"],
        r"(?-u)\b(?:hf|api_org)_[A-Za-z0-9]{30,}\b",
    ),
    // More vendors' formats (gitleaks' and trufflehog's rule sets name them).
    rule(
        "tailscale-key",
        Critical,
        &["tskey-"],
        r"(?-u)\btskey-(?:auth|api|client|webhook|scim)-[A-Za-z0-9]{6,}-[A-Za-z0-9]{16,}",
    ),
    rule(
        "grafana-token",
        High,
        &["glsa_", "glc_", "eyjrijoi"],
        r"(?-u)\b(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,400}={0,2}|eyJrIjoi[A-Za-z0-9]{70,400}={0,2})",
    ),
    rule(
        "jfrog-token",
        High,
        &["akcp", "cmvmdgtuoja"],
        r"(?-u)\b(?:AKCp[A-Za-z0-9]{69}|cmVmdGtuOjA[A-Za-z0-9]{59,})\b",
    ),
    rule(
        "okta-api-token",
        High,
        &["ssws "],
        r"(?i-u)\bssws\s+00[A-Za-z0-9_\-]{40}\b",
    ),
    rule(
        "firebase-cloud-messaging-key",
        High,
        &["apa91b"],
        r"(?-u)\bAAAA[A-Za-z0-9_\-]{7}:APA91b[A-Za-z0-9_\-]{134}",
    ),
    rule(
        "hubspot-private-app-token",
        High,
        &["pat-na1-", "pat-eu1-"],
        r"(?-u)\bpat-(?:na|eu)1-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
    ),
    rule(
        "dynatrace-token",
        High,
        &["dt0c01."],
        r"(?-u)\bdt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}\b",
    ),
    rule(
        "contentful-token",
        High,
        &["cfpat-"],
        r"(?-u)\bCFPAT-[A-Za-z0-9_\-]{43}",
    ),
    rule(
        "pinecone-api-key",
        High,
        &["pcsk_"],
        r"(?-u)\bpcsk_[A-Za-z0-9_]{50,}",
    ),
    rule(
        "langsmith-api-key",
        High,
        &["lsv2_"],
        r"(?-u)\blsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}\b",
    ),
    rule(
        "openshift-token",
        High,
        &["sha256~"],
        r"(?-u)\bsha256~[A-Za-z0-9_\-]{43}",
    ),
    rule(
        "neon-api-key",
        High,
        &["napi_"],
        r"(?-u)\bnapi_[a-z0-9]{64}\b",
    ),
    rule(
        "ci-platform-token",
        High,
        &["ccipat_", "bkua_", "rnd_"],
        r"(?-u)\b(?:CCIPAT_[A-Za-z0-9]{22}_[a-f0-9]{40}|bkua_[a-f0-9]{40}|rnd_[A-Za-z0-9]{32})\b",
    ),
    rule(
        "brevo-api-key",
        High,
        &["xkeysib-", "xsmtpsib-"],
        r"(?-u)\bx(?:keysib|smtpsib)-[a-f0-9]{64}-[A-Za-z0-9]{16}\b",
    ),
    rule(
        "braintree-access-token",
        Critical,
        &["access_token$"],
        r"(?-u)access_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}",
    ),
    rule(
        "cloudflare-origin-ca-key",
        High,
        &["v1.0-"],
        r"(?-u)\bv1\.0-[a-f0-9]{24}-[a-f0-9]{146}\b",
    ),
    rule(
        "harness-pat",
        High,
        &["pat."],
        r"(?-u)\b(?:pat|sat)\.[A-Za-z0-9_\-]{22}\.[a-f0-9]{24}\.[A-Za-z0-9]{20}\b",
    ),
    rule(
        "payments-api-key",
        Critical,
        &["shippo_", "duffel_", "flwseck"],
        r"(?-u)\b(?:shippo_(?:live|test)_[a-f0-9]{40}|duffel_(?:live|test)_[A-Za-z0-9_\-]{43}|FLWSECK(?:_TEST)?-[a-h0-9]{32}-X)",
    ),
    rule(
        "developer-platform-token",
        High,
        &["pnu_", "rdme_", "sgp_", "clojars_"],
        r"(?-u)\b(?:pnu_[A-Za-z0-9]{36}|rdme_[a-z0-9]{70}|sgp_(?:[a-f0-9]{16}_)?[a-f0-9]{40}|CLOJARS_[a-z0-9]{60})\b",
    ),
    rule(
        "elevenlabs-api-key",
        High,
        &["sk_"],
        r"(?-u)\bsk_[a-f0-9]{48}\b",
    ),
    // Keys and tokens of any issuer.
    rule(
        "private-key",
        Critical,
        &["private key", "putty-user-key-file-"],
        r"(?-u)(?:-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-[23]:)",
    ),
    rule(
        "private-key-body",
        Critical,
        // Short heads keep the index small; the regex checks the rest.
        &[
            "b3blbnnzac1r",
            "ibaak",
            "ibadanbgkq",
            "mhccaqeei",
            "mc4caqawbq",
        ],
        r"(?-u)(?:b3BlbnNzaC1rZXktdjE|MII[A-Za-z0-9+/]{3}IBAAK(?:CAQEA|CAgEA|BgQC)|MII[A-Za-z0-9+/]{3}IBADANBgkqhkiG9w0BAQEFAASC|MHcCAQEEI|MC4CAQAwBQYDK2VwBCIEI)(?:[A-Za-z0-9+/]|\\[nr]|\s){40,}",
    ),
    rule(
        "jwk-private-key",
        Critical,
        &["\"kty\"", "kty\\"],
        r#"(?-u)"kty\\*"\s*:\s*\\*"(?:RSA|EC|OKP)\\*"[^{}\[\]]*?"d\\*"\s*:\s*\\*"[A-Za-z0-9_\-]{20,}|"d\\*"\s*:\s*\\*"[A-Za-z0-9_\-]{20,}\\*"[^{}\[\]]*?"kty\\*"\s*:\s*\\*"(?:RSA|EC|OKP)"#,
    ),
    rule(
        "age-secret-key",
        Critical,
        &["age-secret-key-1"],
        r"(?-u)AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
    ),
    rule(
        "jwt",
        High,
        &["eyj"],
        r"(?-u)\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
    ),
    Rule {
        name: "basic-auth-credentials",
        severity: High,
        keywords: &["basic "],
        regex: r"(?i-u)^\s*basic\s+[A-Za-z0-9+/]{8,}={0,2}\s*$",
        parts: Parts::Header,
        check: Check::None,
        shape: None,
        anchor: None,
        anchor_gate: None,
    },
    Rule {
        name: "connection-string-password",
        severity: High,
        keywords: &["://"],
        regex: r#"(?i-u)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|jdbc:[a-z]+|ftps?|sftp|smtps?|ldaps?|https?|ssh|git)://[^:/?#@\s"']{0,128}:([^@/?#\s"']{3,128})@"#,
        parts: Parts::All,
        check: Check::AssignedValue,
        shape: None,
        anchor: Some(r#"(?-u)\A[^:/?#@\s"']{0,128}:([^@/?#\s"']{3,128})@"#),
        anchor_gate: None,
    },
    Rule {
        name: "credential-assignment",
        severity: Medium,
        keywords: &[
            "pass",
            "password",
            "passwd",
            "passphrase",
            "pwd",
            "secret",
            "secret_key",
            "secretkey",
            "secret-key",
            "token",
            "api_key",
            "apikey",
            "api-key",
            "access_key",
            "accesskey",
            "access-key",
            "private_key",
            "privatekey",
            "private-key",
            "credential",
            "credentials",
            "pat",
            "_pw",
            "passcode",
            "authtoken",
            "authkey",
            "apitoken",
        ],
        regex: r#"(?i-u)(?:\bpass|passwd|password|passphrase|pwd|secret|secret_?key|client_?secret|api_?key|api-key|access_?key|auth_?token|access_?token|refresh_?token|bearer_?token|session_?token|private_?key|token|credentials?|(?:\b|_)pat|_pw|passcode|authkey|apitoken)(?:\\*["'])?\s*(?:[:=]|=>|:=|>)\s*(?:\\*["'])?([^\s"'&;,<>{}()\[\]\\:][^\s"'&;,<>{}()\[\]\\]{5,199})"#,
        parts: Parts::All,
        check: Check::AssignedValue,
        shape: None,
        anchor: Some(
            r#"(?-u)\A(?:\\*["'])?\s*(?:[:=]|=>|:=|>)\s*(?:\\*["'])?([^\s"'&;,<>{}()\[\]\\:][^\s"'&;,<>{}()\[\]\\]{5,199})"#,
        ),
        anchor_gate: Some(assignment_may_follow),
    },
    Rule {
        name: "key-assignment",
        severity: Medium,
        keywords: &["_key"],
        regex: r#"(?i-u)_key(?:\\*["'])?\s*(?:[:=]|=>|:=|>)\s*(?:\\*["'])?([^\s"'&;,<>{}()\[\]\\:][^\s"'&;,<>{}()\[\]\\]{5,199})"#,
        parts: Parts::All,
        check: Check::RandomAssignedValue,
        shape: None,
        anchor: Some(
            r#"(?-u)\A(?:\\*["'])?\s*(?:[:=]|=>|:=|>)\s*(?:\\*["'])?([^\s"'&;,<>{}()\[\]\\:][^\s"'&;,<>{}()\[\]\\]{5,199})"#,
        ),
        anchor_gate: Some(assignment_may_follow),
    },
    Rule {
        name: "authorization-credentials",
        severity: High,
        keywords: &["auth"],
        regex: r"(?i-u)^[a-z0-9-]*auth[a-z0-9-]*:\s*(?:[A-Za-z][A-Za-z0-9_\-]{0,20}\s+)?([A-Za-z0-9._~+/:$\-]{20,}={0,2})\s*$",
        parts: Parts::Header,
        check: Check::RandomAssignedValue,
        shape: None,
        anchor: None,
        anchor_gate: None,
    },
    checked(
        "cli-password",
        High,
        &["sshpass", "mysql"],
        r#"(?-u)(?:\bsshpass\s+-p\s*["']?([^\s"']{6,200})|(?:^|[\s;|&("'`])mysql(?:dump|admin)?\s(?:[^\n|;&]{0,200}?\s)?-p([^\s"'\\=]{6,200})(?:\s|$))"#,
        Check::AssignedValue,
    ),
    checked(
        "credential-flag",
        Medium,
        &[
            "--pass",
            "--token",
            "--secret",
            "--api-key",
            "--apikey",
            "--access-token",
            "--auth-token",
            "-u ",
        ],
        r#"(?i-u)(?:(?:^|\s)--(?:password|passwd|pass|token|secret|api-key|apikey|access-token|auth-token)(?:=|\s+)["']?([^\s"']{6,200})|(?:^|\s)-u\s+[^\s:"']{1,64}:([^\s"'@]{6,128}))"#,
        Check::AssignedValue,
    ),
    Rule {
        name: "bearer-token",
        severity: High,
        keywords: &["bearer "],
        regex: r"(?i-u)^\s*bearer\s+([A-Za-z0-9._~+/\-]{20,}=*)\s*$",
        parts: Parts::Header,
        check: Check::RandomToken,
        shape: None,
        anchor: None,
        anchor_gate: None,
    },
    checked(
        "crypto-seed-phrase",
        Critical,
        &[
            "mnemonic",
            "seed phrase",
            "seed_phrase",
            "seedphrase",
            "recovery phrase",
            "recovery_phrase",
            "seed words",
            "wallet words",
        ],
        r#"(?i-u)(?:mnemonic|seed[ _-]?phrase|recovery[ _-]?phrase|(?:seed|wallet)[ _-]?words)\\*["']?\s*[:=]?\s*(?:[\s"'\[0-9.)\\]|\\[nrt])*((?:(?-i:[a-z]{3,8})(?:[\s,"'\[\]().0-9\\]|\\[nrt])+){11,23}(?-i:[a-z]{3,8}))"#,
        Check::None,
    ),
    // Financial and crypto.
    Rule {
        name: "payment-card-number",
        severity: High,
        keywords: &[],
        regex: r"(?-u)(?:^|[^0-9A-Za-z_.\-])([2-6][0-9]{3}(?:[ \-]?[0-9]{2,4}){2,5})(?:[^0-9A-Za-z_\-]|$)",
        parts: Parts::All,
        check: Check::Card,
        shape: Some(Shape::DigitGroups),
        anchor: None,
        anchor_gate: None,
    },
    Rule {
        name: "iban",
        severity: High,
        keywords: &[],
        regex: r"(?-u)\b([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b",
        parts: Parts::All,
        check: Check::Iban,
        shape: Some(Shape::Iban),
        anchor: None,
        anchor_gate: None,
    },
    Rule {
        name: "crypto-private-key-or-address",
        severity: High,
        keywords: &[],
        regex: r"(?-u)\b([13][1-9A-HJ-NP-Za-km-z]{25,34}|[LMDTmn2][1-9A-HJ-NP-Za-km-z]{33,34}|[5KLc][1-9A-HJ-NP-Za-km-z]{50,51})\b",
        parts: Parts::All,
        check: Check::Base58Check,
        shape: Some(Shape::Base58Run),
        anchor: None,
        anchor_gate: None,
    },
    checked(
        "bitcoin-bech32-address",
        High,
        &["bc1", "ltc1", "tb1"],
        r"(?-u)\b((?:bc|ltc|tb)1[ac-hj-np-z02-9]{11,71})\b",
        Check::Bech32,
    ),
    checked(
        "crypto-extended-private-key",
        Critical,
        &["xprv", "yprv", "zprv", "tprv"],
        r"(?-u)\b([xyzt]prv[1-9A-HJ-NP-Za-km-z]{107,108})\b",
        Check::ExtendedKey,
    ),
];

/// The start of the credential-assignment anchor, `["']?\s*` then `:`, `=`
/// or `>`: `token` in `max_tokens` or `tokens =` is not an assignment.
fn assignment_may_follow(after: &[u8]) -> bool {
    // A quote may be escaped, inside a JSON string (`\"password\": …`).
    let after = &after[after.iter().take_while(|&&b| b == b'\\').count()..];
    let rest = match after.first() {
        Some(b'"' | b'\'') => &after[1..],
        _ => after,
    };
    // `\s` without Unicode: tab, newline, vertical tab, form feed, return, space.
    let at = rest
        .iter()
        .position(|b| !matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' '));
    match at.map(|at| (rest[at], rest.get(at + 1))) {
        // `token::Claims`: a path.
        Some((b':', next)) => next != Some(&b':'),
        Some((b'=' | b'>', _)) => true,
        _ => false,
    }
}

/// Whether a rule's match (`whole`, and `group` if the regex captures one)
/// passes its check, and with what severity.
pub fn check(rule: &Rule, whole: &[u8], group: Option<&[u8]>) -> Option<Severity> {
    let subject = group.unwrap_or(whole);
    if is_filler(whole) || group.is_some_and(is_filler) {
        return None;
    }
    let ok = match rule.check {
        Check::None => true,
        Check::GithubCrc => {
            return Some(if checksum::github_token_checksum_ok(whole) {
                Severity::Critical
            } else {
                rule.severity
            });
        }
        Check::AssignedValue => looks_like_secret_value(subject),
        Check::Card => card_ok(subject),
        Check::Iban => checksum::iban_ok(subject),
        Check::Base58Check => {
            checksum::bitcoin_base58_address_ok(subject) || checksum::wif_ok(subject)
        }
        Check::ExtendedKey => checksum::extended_private_key_ok(subject),
        Check::Bech32 => checksum::bech32_ok(subject),
        Check::RandomToken => is_random_token(subject),
        Check::RandomAssignedValue => {
            looks_like_secret_value(subject)
                && is_random_token(trim_value(subject))
                && !is_id_like(trim_value(subject))
        }
    };
    ok.then_some(rule.severity)
}

/// Filler where a token's random part goes (`ghp_xxxx…`, `XXXX…`, `****…`):
/// a template's placeholder (`.env.example`, docs), no one's secret. The
/// vendors' own documented sample values (AWS's `…EXAMPLE` keys, test card
/// numbers) still count: they are what a leak test is written with.
fn is_filler(text: &[u8]) -> bool {
    text.chunk_by(|a, b| a == b)
        .any(|run| run.len() >= 16 && matches!(run[0], b'x' | b'X' | b'*' | b'0'))
}

/// Whether the word before a rule's keyword (see the caller) says the
/// value is no secret: pagination and anti-forgery tokens; keys that are
/// names, hashes, ids or published on purpose (`cache_key`, `sentry_key`,
/// `publishable_key`).
pub fn names_no_secret<'a>(rule: &Rule, qualifier: impl FnOnce() -> &'a [u8]) -> bool {
    const TOKENS: &[&str] = &[
        "next",
        "page",
        "continuation",
        "sync",
        "resume",
        "csrf",
        "xsrf",
        "cursor",
    ];
    const KEYS: &[&str] = &[
        "cache",
        "lock",
        "idempotency",
        "dedup",
        "partition",
        "sort",
        "range",
        "row",
        "hash",
        "object",
        "s3",
        "file",
        "upload",
        "primary",
        "foreign",
        "kms",
        "sentry",
        "public",
        "publishable",
        "pub",
        "site",
        "vapid",
        "anon",
        "routing",
        "shard",
        "lookup",
        "group",
        "index",
        "map",
        "i18n",
        "translation",
        "message",
        "tag",
        "label",
        "metric",
    ];
    let list = match rule.check {
        Check::RandomAssignedValue => KEYS,
        Check::AssignedValue => TOKENS,
        _ => return false,
    };
    let qualifier = qualifier();
    list.iter()
        .any(|w| qualifier.eq_ignore_ascii_case(w.as_bytes()))
}

/// Ids, hashes and references that generated-looking values often are:
/// a UUID, an ARN, `algorithm:hex`, a file path.
fn is_id_like(value: &[u8]) -> bool {
    let hex_or_dash = |b: &u8| b.is_ascii_hexdigit() || *b == b'-';
    let uuid = value.len() == 36
        && value.iter().all(hex_or_dash)
        && [8, 13, 18, 23].iter().all(|&i| value[i] == b'-');
    let arn = value.starts_with(b"arn:");
    let digest = value.iter().position(|&b| b == b':').is_some_and(|p| {
        p > 0
            && value[..p].iter().all(u8::is_ascii_alphanumeric)
            && value[p + 1..].len() >= 32
            && value[p + 1..].iter().all(u8::is_ascii_hexdigit)
    });
    let path = value.contains(&b'/') && value.contains(&b'.');
    uuid || arn || digest || path
}

/// Long and varied enough to be generated.
fn is_random_token(text: &[u8]) -> bool {
    text.len() >= 20 && super::entropy::shannon_entropy(text) >= 3.5
}

/// A card number: 13 to 19 digits with consistent separators, a known brand
/// prefix and length, and a valid Luhn digit.
fn card_ok(text: &[u8]) -> bool {
    let digits: Vec<u8> = text.iter().copied().filter(u8::is_ascii_digit).collect();
    let separators: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_digit())
        .collect();
    if separators.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    if digits.windows(2).all(|w| w[0] == w[1]) {
        return false;
    }
    let len = digits.len();
    // Brands whose numbers look like other long ids (Discord's, Twitter's)
    // count when grouped as printed on a card or exactly 16 digits long.
    let card_like = !separators.is_empty() || len == 16;
    let prefix = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let brand_ok = match digits[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        // Mastercard; Maestro.
        b'5' => {
            ((51..=55).contains(&prefix(2)) && len == 16)
                || (matches!(prefix(4), 5018 | 5020 | 5038 | 5893)
                    && (12..=19).contains(&len)
                    && card_like)
        }
        // Mastercard's 2-series; Mir.
        b'2' => {
            ((2221..=2720).contains(&prefix(4)) && len == 16)
                || ((2200..=2204).contains(&prefix(4)) && (16..=19).contains(&len) && card_like)
        }
        b'3' => {
            (matches!(prefix(2), 34 | 37) && len == 15)
                || (matches!(prefix(2), 36 | 38 | 39 | 30) && (14..=19).contains(&len))
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len))
        }
        b'6' => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                && (16..=19).contains(&len)
                // Maestro.
                || (matches!(prefix(4), 6304 | 6759 | 6761 | 6762 | 6763)
                    && (12..=19).contains(&len)
                    && card_like)
                || (prefix(2) == 62 && (16..=19).contains(&len))
        }
        _ => false,
    };
    brand_ok && checksum::luhn_ok(&digits)
}

/// Words that stand for a value rather than being one.
const NOT_A_VALUE: &[&str] = &[
    "null",
    "none",
    "nil",
    "true",
    "false",
    "undefined",
    "string",
    "required",
    "optional",
    "redacted",
    "placeholder",
    "example",
    "changeme",
    "password",
    "secret",
    "token",
    "xxxxxx",
    "******",
    "hidden",
    "masked",
    "unknown",
    "default",
];

/// Whether an assigned value looks like a real secret: long enough, not a
/// reference (`$VAR`, `${...}`, `process.env.X`, `<...>`), not a type or a
/// placeholder word, and not a bare identifier or dotted name.
pub fn looks_like_secret_value(value: &[u8]) -> bool {
    let value = trim_value(value);
    if value.len() < 6 {
        return false;
    }
    // References and templates (`$X`, `%X%`, `{{x}}`, `<x>`, `@x`), and YAML
    // tags (`!GetAtt x`, `!vault |`).
    if matches!(
        value[0],
        b'$' | b'%' | b'{' | b'<' | b'@' | b'#' | b'\\' | b'!' | b'['
    ) {
        return false;
    }
    // Redirect targets (`echo "$KEY" > ~/.ssh/id`), masked or elided
    // values (`sk-proj-...Q2xA`, `***REDACTED***`), validation rules
    // (`required|string|min:12`).
    let lower = value.to_ascii_lowercase();
    let rule_word = |p: &[u8]| {
        p.iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'_')
    };
    if matches!(value[0], b'~' | b'/' | b'.')
        || lower
            .windows(3)
            .any(|w| w == b"..." || w == b"***" || w == "\u{2026}".as_bytes())
        || lower.windows(8).any(|w| w == b"redacted")
        || (value.contains(&b'|') && value.split(|&b| b == b'|').all(rule_word))
    {
        return false;
    }
    // Code, not a literal: a path (`Uuid::new_v4`, `$r->password`), a key
    // whose value is on the next line (`token:`), an environment
    // variable's value (`src=$HOME/.npmrc`).
    if value.windows(2).any(|w| w == b"::" || w == b"->")
        || value.ends_with(b":")
        || value
            .windows(3)
            .any(|w| w[0] == b'$' && w[1].is_ascii_uppercase() && w[2].is_ascii_uppercase())
    {
        return false;
    }
    if NOT_A_VALUE.iter().any(|w| lower == w.as_bytes())
        || lower.windows(3).any(|w| w == b"env")
        || lower.starts_with(b"your")
        || lower.starts_with(b"self.")
        || lower.starts_with(b"this.")
        || value.iter().all(|&b| b == value[0])
    {
        return false;
    }
    let has_digit = value.iter().any(u8::is_ascii_digit);
    let has_upper = value.iter().any(u8::is_ascii_uppercase);
    let has_lower = value.iter().any(u8::is_ascii_lowercase);
    let has_symbol = value
        .iter()
        .any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'_' | b'-' | b'.' | b'/'));
    // Identifiers, dotted names, paths and kebab words without a digit,
    // unless the case flips as often as in generated letters.
    if !has_digit && !has_symbol {
        let flips = value
            .windows(2)
            .filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase())
            .count();
        let upper = value.iter().filter(|b| b.is_ascii_uppercase()).count();
        let len = value.len();
        return len >= 16
            && (len * 35..=len * 80).contains(&(upper * 100))
            && flips * 10 >= len * 2
            && super::entropy::shannon_entropy(value) >= 3.9;
    }
    // Plain numbers and versions.
    if !has_upper && !has_lower {
        return false;
    }
    // Lower-case words joined by hyphens or underscores, with numbers or
    // a short suffix (`api-token-v3`, `created_at_2024`): names of things.
    let pieces: Vec<&[u8]> = value.split(|&b| b == b'-' || b == b'_').collect();
    if pieces.len() >= 2
        && pieces.iter().all(|p| {
            let letters = p.iter().take_while(|b| b.is_ascii_lowercase()).count();
            p.iter().all(u8::is_ascii_lowercase)
                || p.iter().all(u8::is_ascii_digit)
                || (p.len() <= 2 && !p.is_empty())
                // `base64`, `sha256`: a word and a short number.
                || (letters >= 2
                    && (1..=3).contains(&(p.len() - letters))
                    && p[letters..].iter().all(u8::is_ascii_digit))
        })
        && pieces.iter().any(|p| p.len() >= 3)
    {
        return false;
    }
    let classes = [has_digit, has_upper, has_lower, has_symbol]
        .iter()
        .filter(|c| **c)
        .count();
    classes >= 2
}

fn trim_value(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b'"' | b'\'' | b'`' | b'\\'))
        .map_or(0, |p| p + 1);
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gate never turns down what its rule's anchor matches.
    #[test]
    fn anchor_gates_only_turn_down_what_the_anchor_misses() {
        let pieces: &[&[u8]] = &[
            b"\"",
            b"'",
            b" ",
            b"\t",
            b"\n",
            b"\x0b",
            b"\x0c",
            b"\r",
            b":",
            b"=",
            b">",
            b"=>",
            b":=",
            b"s",
            b"x",
            b"_",
            b"hunter22",
            b"S3cure!Pass",
            b"${X}",
            b"{",
            b",",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for rule in BUILTIN_RULES.iter().filter(|r| r.anchor_gate.is_some()) {
            let anchor = regex::bytes::Regex::new(rule.anchor.unwrap()).unwrap();
            let gate = rule.anchor_gate.unwrap();
            let mut matched = 0;
            for _ in 0..20_000 {
                let mut after = Vec::new();
                for _ in 0..(state % 6) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    after.extend_from_slice(pieces[(state % pieces.len() as u64) as usize]);
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if anchor.is_match(&after) {
                    matched += 1;
                    assert!(
                        gate(&after),
                        "{}: {}",
                        rule.name,
                        String::from_utf8_lossy(&after)
                    );
                }
            }
            assert!(matched > 100, "{}: {matched}", rule.name);
        }
    }

    #[test]
    fn assigned_values() {
        for yes in [
            &b"hunter22"[..],
            b"S3cr3t!pass",
            b"Zx9-PqL2-mm",
            b"p@ssw0rd!",
            b"abcdef123456",
            b"jgHbZkZQXkSNfWOKWUqP",
            b"HTDMqjgFAKEZQXkSNfWOKWUo",
        ] {
            assert!(
                looks_like_secret_value(yes),
                "{}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &b"${DB_PASSWORD}"[..],
            b"$TOKEN",
            b"process.env.TOKEN",
            b"os.environ",
            b"string",
            b"undefined",
            b"password_field",
            b"args.token",
            b"my-new-feature",
            b"<your-token>",
            b"xxxxxxxx",
            b"********",
            b"12345678",
            b"1.2.3-4",
            b"abc",
            b"your_api_key_here",
            b"ThisIsALongCamelCaseName",
            b"getAccessTokenFromStore",
        ] {
            assert!(
                !looks_like_secret_value(no),
                "{}",
                String::from_utf8_lossy(no)
            );
        }
    }

    #[test]
    fn cards() {
        for yes in [
            &b"4111111111111111"[..],
            b"4111 1111 1111 1111",
            b"5500-0000-0000-0004",
            b"378282246310005",
            b"6011111111111117",
            b"2223003122003222",
        ] {
            assert!(card_ok(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"4111111111111112"[..],
            b"4111-1111 1111-1111",
            b"1234567812345670",
            b"5555555555555555",
            b"9111111111111111",
        ] {
            assert!(!card_ok(no), "{}", String::from_utf8_lossy(no));
        }
    }

    const ALNUM: &str = "FAKEfake0123456789EXAMPLEexampleZYXWzyxw";
    const HEX: &str = "0123456789abcdef";

    /// `prefix` and `len` characters cycled from `alphabet`.
    fn tok(prefix: &str, alphabet: &str, len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let mut s = prefix.to_owned();
        for i in 0..len {
            s.push(chars[(i * 7 + 3) % chars.len()]);
        }
        s
    }

    /// A GitHub-format token with a valid CRC32 suffix.
    fn github_with_checksum(prefix: &str) -> String {
        let random = tok("", ALNUM, 30);
        let check = checksum::base62_padded(u64::from(checksum::crc32(random.as_bytes())), 6);
        format!("{prefix}{random}{check}")
    }

    fn base58check_encode(payload: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        let mut data = payload.to_vec();
        data.extend_from_slice(&Sha256::digest(Sha256::digest(payload))[..4]);
        let mut digits: Vec<u8> = Vec::new();
        for &byte in &data {
            let mut carry = u32::from(byte);
            for d in digits.iter_mut() {
                carry += u32::from(*d) << 8;
                *d = (carry % 58) as u8;
                carry /= 58;
            }
            while carry > 0 {
                digits.push((carry % 58) as u8);
                carry /= 58;
            }
        }
        let zeros = data.iter().take_while(|&&b| b == 0).count();
        std::iter::repeat_n('1', zeros)
            .chain(
                digits
                    .iter()
                    .rev()
                    .map(|&d| char::from(ALPHABET[d as usize])),
            )
            .collect()
    }

    /// The severity of the first match of `rule` in `text` that passes its check.
    fn matched(rule: &Rule, text: &str) -> Option<Severity> {
        let regex = regex::bytes::Regex::new(rule.regex).unwrap();
        regex.captures_iter(text.as_bytes()).find_map(|caps| {
            check(
                rule,
                caps.get(0).unwrap().as_bytes(),
                caps.get(1).or_else(|| caps.get(2)).map(|m| m.as_bytes()),
            )
        })
    }

    /// Whether `rule` fires on `text`: its regex and check, or, for rules
    /// matched after their keywords, the engine itself.
    fn fires(rule: &Rule, text: &str) -> bool {
        if rule.anchor.is_none() {
            return matched(rule, text).is_some();
        }
        let engine =
            super::super::DlpEngine::new(&crate::config::DlpConfig::default(), &[]).unwrap();
        let finding = engine.scan(text.as_bytes(), super::super::ScanPart::Body, "x.test");
        finding.is_some_and(|f| f.rule == rule.name)
    }

    /// (rule, strings it must match, strings it must not).
    fn examples() -> Vec<(&'static str, Vec<String>, Vec<String>)> {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let xprv = {
            let mut payload = vec![0x04, 0x88, 0xAD, 0xE4];
            payload.extend(std::iter::repeat_n(0x11, 74));
            base58check_encode(&payload)
        };
        let wif = {
            let mut payload = vec![0x80];
            payload.extend(std::iter::repeat_n(0x22, 32));
            payload.push(0x01);
            base58check_encode(&payload)
        };
        vec![
            (
                "aws-access-key-id",
                s(&["AKIAIOSFODNN7EXAMPLE", "id=ASIAFAKEFAKEFAKE2345;"]),
                s(&["AKIAIOSFODNN7EXAMPL", "AKIA1234567890123456"]),
            ),
            (
                "aws-secret-access-key",
                s(&["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]),
                s(&["aws_secret_access_key = ${AWS_SECRET}"]),
            ),
            (
                "google-api-key",
                vec![tok("AIza", ALNUM, 35)],
                s(&["AIzaShort"]),
            ),
            (
                "google-oauth-client-secret",
                vec![tok("GOCSPX-", ALNUM, 28)],
                s(&["GOCSPX-short"]),
            ),
            (
                "google-oauth-access-token",
                vec![tok("ya29.", ALNUM, 40)],
                s(&["ya29.short"]),
            ),
            (
                "gcp-service-account",
                s(&[r#"{"type": "service_account", "project_id": "x"}"#]),
                s(&[r#"{"type": "user"}"#]),
            ),
            (
                "azure-storage-account-key",
                vec![format!("AccountKey={}==", tok("", ALNUM, 86))],
                s(&["AccountKey=abc"]),
            ),
            (
                "azure-ad-client-secret",
                vec![format!("secret Fak8Q~{} end", tok("", ALNUM, 34))],
                s(&["Q~short"]),
            ),
            (
                "alibaba-access-key-id",
                vec![tok("LTAI", ALNUM, 20)],
                s(&["LTAI12"]),
            ),
            (
                "tencent-secret-id",
                vec![tok("AKID", ALNUM, 32)],
                s(&["AKID123"]),
            ),
            (
                "digitalocean-token",
                vec![tok("dop_v1_", HEX, 64)],
                s(&["dop_v1_xyz"]),
            ),
            (
                "databricks-token",
                vec![tok("dapi", HEX, 32)],
                vec![tok("dapi", HEX, 31)],
            ),
            (
                "heroku-api-key",
                vec![tok("HRKU-", ALNUM, 60)],
                s(&["HRKU-short"]),
            ),
            (
                "flyio-token",
                vec![tok("fo1_", ALNUM, 43), tok("FlyV1 fm2_", ALNUM, 120)],
                s(&["fo1_short"]),
            ),
            (
                "vault-token",
                vec![tok("hvs.", ALNUM, 90)],
                s(&["hvs.short"]),
            ),
            (
                "terraform-cloud-token",
                vec![format!(
                    "{}.atlasv1.{}",
                    tok("", ALNUM, 14),
                    tok("", ALNUM, 67)
                )],
                s(&["abc.atlasv1.x"]),
            ),
            (
                "doppler-token",
                vec![tok("dp.pt.", ALNUM, 43)],
                s(&["dp.pt.short"]),
            ),
            ("pulumi-token", vec![tok("pul-", HEX, 40)], s(&["pul-xyz"])),
            (
                "planetscale-token",
                vec![tok("pscale_tkn_", ALNUM, 43)],
                s(&["pscale_tkn_short"]),
            ),
            (
                "supabase-token",
                vec![tok("sbp_", HEX, 40), tok("sb_secret_", ALNUM, 32)],
                s(&["sbp_xyz"]),
            ),
            (
                "github-pat",
                vec![
                    github_with_checksum("ghp_"),
                    tok("ghp_", ALNUM, 36),
                    tok("ghp_", ALNUM, 40),
                ],
                s(&["ghp_short", "ghp_"]),
            ),
            (
                "github-oauth-token",
                vec![tok("gho_", ALNUM, 36)],
                s(&["gho_short"]),
            ),
            (
                "github-user-to-server-token",
                vec![tok("ghu_", ALNUM, 36)],
                s(&["ghu_short"]),
            ),
            (
                "github-server-to-server-token",
                vec![tok("ghs_", ALNUM, 36)],
                s(&["ghs_short"]),
            ),
            (
                "github-refresh-token",
                vec![tok("ghr_", ALNUM, 76)],
                s(&["ghr_short"]),
            ),
            (
                "github-fine-grained-pat",
                vec![format!(
                    "github_pat_{}_{}",
                    tok("", ALNUM, 22),
                    tok("", ALNUM, 59)
                )],
                s(&["github_pat_short"]),
            ),
            (
                "gitlab-pat",
                vec![tok("glpat-", ALNUM, 20)],
                s(&["glpat-short"]),
            ),
            (
                "gitlab-token",
                vec![tok("glrt-", ALNUM, 20), tok("GR1348941", ALNUM, 20)],
                s(&["glrt-x"]),
            ),
            (
                "atlassian-api-token",
                vec![tok("ATATT3xFfGF0", ALNUM, 180), tok("ATBB", ALNUM, 32)],
                s(&["ATBB12"]),
            ),
            (
                "npm-token",
                vec![github_with_checksum("npm_"), tok("npm_", ALNUM, 36)],
                s(&["npm_install", "npm_config_registry"]),
            ),
            (
                "pypi-token",
                vec![tok("pypi-AgEIcHlwaS5vcmc", ALNUM, 60)],
                s(&["pypi-AgEIcHlwaS5vcmcshort"]),
            ),
            (
                "dockerhub-pat",
                vec![tok("dckr_pat_", ALNUM, 27)],
                s(&["dckr_pat_x"]),
            ),
            (
                "rubygems-api-key",
                vec![tok("rubygems_", HEX, 48)],
                s(&["rubygems_abc"]),
            ),
            (
                "nuget-api-key",
                vec![tok("oy2", "abcdefghijklmnopqrstuvwxyz0123456789", 43)],
                s(&["oy2short"]),
            ),
            (
                "crates-io-token",
                vec![tok("cio", ALNUM, 32)],
                s(&["cio12345", "ciao"]),
            ),
            (
                "stripe-secret-key",
                vec![
                    tok("sk_live_", ALNUM, 24),
                    format!(
                        "STRIPE_KEY_sk_live_51H{}_{}",
                        tok("", ALNUM, 20),
                        tok("", ALNUM, 8)
                    ),
                    tok("rk_live_", ALNUM, 24),
                ],
                vec!["sk_live_short".to_owned(), tok("pk_live_", ALNUM, 24)],
            ),
            (
                "stripe-webhook-secret",
                vec![tok("whsec_", ALNUM, 32)],
                s(&["whsec_short"]),
            ),
            (
                "square-token",
                vec![tok("sq0atp-", ALNUM, 22)],
                s(&["sq0atp-x"]),
            ),
            (
                "shopify-token",
                vec![tok("shpat_", HEX, 32)],
                s(&["shpat_xyz"]),
            ),
            (
                "slack-token",
                s(&["xoxb-1234567890-1234567890-FAKEfakeFAKEfake"]),
                s(&["xoxb-123"]),
            ),
            (
                "slack-app-token",
                s(&["xapp-1-A0FAKE12345-1234567890123-abcdef0123456789"]),
                s(&["xapp-x"]),
            ),
            (
                "slack-webhook",
                s(&[
                    "https://hooks.slack.com/services/T04FAKE0TK/B05FAKE9QX/q8Zt3FAKEw0rkX2mFAKEk9Lp",
                ]),
                s(&[
                    "https://hooks.slack.com/services/",
                    // A template's filler.
                    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
                ]),
            ),
            (
                "sendgrid-api-key",
                vec![format!("SG.{}.{}", tok("", ALNUM, 22), tok("", ALNUM, 43))],
                s(&["SG.short.x"]),
            ),
            (
                "twilio-api-key",
                vec![tok("TWILIO_API_KEY=SK", HEX, 32)],
                vec![tok("twilio SK", HEX, 31)],
            ),
            (
                "mailgun-api-key",
                vec![tok("key-", ALNUM, 32)],
                s(&["key-value"]),
            ),
            (
                "mailchimp-api-key",
                vec![format!("{}-us12", tok("", HEX, 32))],
                s(&["abc-us12"]),
            ),
            (
                "discord-bot-token",
                s(&[
                    "discord token MTAxFAKEFAKEFAKEFAKEFAKE12.GaBcDe.FAKEfakeFAKEfakeFAKEfakeFAKEfake12",
                ]),
                s(&["discord MTA.short.x"]),
            ),
            (
                "discord-webhook",
                vec![format!(
                    "https://discord.com/api/webhooks/123456789012345678/{}",
                    tok("", ALNUM, 68)
                )],
                s(&["https://discord.com/api/webhooks/123/short"]),
            ),
            (
                "telegram-bot-token",
                vec![tok("123456789:AA", ALNUM, 33)],
                s(&["123456789:AAshort"]),
            ),
            (
                "linear-api-key",
                vec![tok("lin_api_", ALNUM, 40)],
                s(&["lin_api_x"]),
            ),
            (
                "notion-token",
                vec![
                    tok("secret_", ALNUM, 43),
                    format!("ntn_12345678901{}", tok("", ALNUM, 35)),
                ],
                s(&["secret_sauce"]),
            ),
            ("figma-token", vec![tok("figd_", ALNUM, 40)], s(&["figd_x"])),
            (
                "postman-api-key",
                vec![format!("PMAK-{}-{}", tok("", HEX, 24), tok("", HEX, 34))],
                s(&["PMAK-123"]),
            ),
            (
                "newrelic-api-key",
                vec![
                    tok("NRAK-", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 27),
                    tok("NRJS-", HEX, 19),
                    tok("NRII-", ALNUM, 32),
                ],
                s(&["NRAK-123"]),
            ),
            (
                "sentry-token",
                vec![tok("sntrys_", ALNUM, 60)],
                s(&["sntrys_x"]),
            ),
            (
                "mapbox-secret-token",
                vec![format!(
                    "sk.eyJ{}.{}",
                    tok("", ALNUM, 30),
                    tok("", ALNUM, 22)
                )],
                s(&["sk.eyJx"]),
            ),
            (
                "anthropic-api-key",
                vec![
                    tok("sk-ant-api03-", ALNUM, 93),
                    tok("sk-ant-oat01-", ALNUM, 60),
                ],
                s(&["sk-ant-short"]),
            ),
            (
                "openai-api-key",
                vec![tok("sk-proj-", ALNUM, 120), tok("sk-", ALNUM, 48)],
                s(&["sk-short", "task-sk-0001"]),
            ),
            ("groq-api-key", vec![tok("gsk_", ALNUM, 52)], s(&["gsk_x"])),
            (
                "xai-api-key",
                vec![tok("xai-", ALNUM, 80)],
                s(&["xai-short"]),
            ),
            (
                "perplexity-api-key",
                vec![tok("pplx-", ALNUM, 48)],
                s(&["pplx-x"]),
            ),
            (
                "openrouter-api-key",
                vec![tok("sk-or-v1-", HEX, 64)],
                s(&["sk-or-v1-short", "task-or-v1-0000"]),
            ),
            (
                "netlify-token",
                vec![tok("nfp_", ALNUM, 40)],
                s(&["nfp_short"]),
            ),
            (
                "dropbox-token",
                vec![tok("sl.", ALNUM, 140), tok("sl.u.", ALNUM, 200)],
                s(&["see sl.1 and sl.2", "sl.short-token"]),
            ),
            (
                "google-oauth-refresh-token",
                vec![tok("1//0", ALNUM, 100)],
                s(&["x = 1//0 + 2", "1//0gShort"]),
            ),
            (
                "microsoft-teams-webhook",
                vec![format!(
                    "https://contoso.webhook.office.com/webhookb2/{id}@{id}/IncomingWebhook/{hex}/{id}",
                    id = "0a1b2c3d-0a1b-0a1b-0a1b-0a1b2c3d4e5f",
                    hex = tok("", HEX, 32)
                )],
                s(&["https://contoso.webhook.office.com/webhookb2/docs"]),
            ),
            (
                "docker-config-auth",
                vec![r#"{"auths":{"registry.example.com":{"auth":"ZGVwbG95OkZha2UtUGFzc3cwcmQtNDI="}}}"#.to_owned()],
                s(&[
                    r#"{"auths":{"registry.example.com":{}}}"#,
                    r#"{"auths":{"r.example.com":{"credsStore":"desktop"}}}"#,
                ]),
            ),
            (
                "netrc-credentials",
                s(&[
                    "machine api.example.com login deploy password Fak3-Passw0rd-42",
                    "machine github.com password ghp_notreal0123456789",
                ]),
                s(&[
                    "machine learning password reset flow",
                    "machine api.example.com login deploy password $NETRC_PASSWORD",
                ]),
            ),
            (
                "password-hash",
                s(&[
                    "root:$6$FAKEsalt$Xb7Qm2Lp9Vz4Kc8Nw1Rt6Yh3Jf5Gd0Sa2Xb7Qm2Lp9Vz4Kc8Nw1Rt6Yh3Jf5Gd0Sa2Xb7Qm2Lp9Vz4Kc8Nw1:19000:0:99999:7:::",
                    "admin:$apr1$FAKEsalt$Xb7Qm2Lp9Vz4Kc8Nw1Rt6/",
                    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                    "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
                    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                ]),
                s(&["echo $1$2 and $6$HOME", "sed 's/$2b$/x/'"]),
            ),
            (
                "replicate-api-token",
                vec![tok("r8_", ALNUM, 37)],
                s(&["r8_x"]),
            ),
            (
                "huggingface-token",
                vec![tok("hf_", ALNUM, 34), tok("api_org_", ALNUM, 34)],
                s(&["hf_hub_download"]),
            ),
            (
                "tailscale-key",
                vec![format!("tskey-auth-{}-{}", tok("", ALNUM, 12), tok("", ALNUM, 30))],
                s(&["tskey-auth-short"]),
            ),
            (
                "grafana-token",
                vec![
                    format!("glsa_{}_{}", tok("", ALNUM, 32), tok("", HEX, 8)),
                    tok("glc_", ALNUM, 60),
                    tok("eyJrIjoi", ALNUM, 80),
                ],
                s(&["glsa_short", "glc_x"]),
            ),
            (
                "jfrog-token",
                vec![tok("AKCp", ALNUM, 69), tok("cmVmdGtuOjA", ALNUM, 60)],
                s(&["AKCp123"]),
            ),
            (
                "okta-api-token",
                vec![tok("Authorization: SSWS 00", ALNUM, 40)],
                s(&["SSWS 00short"]),
            ),
            (
                "firebase-cloud-messaging-key",
                vec![format!("key=AAAA{}:APA91b{}", tok("", ALNUM, 7), tok("", ALNUM, 134))],
                s(&["AAAA1234567:APA91bshort"]),
            ),
            (
                "hubspot-private-app-token",
                s(&["pat-na1-6c1d9f2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"]),
                s(&["pat-na1-short"]),
            ),
            (
                "dynatrace-token",
                vec![format!("dt0c01.{}.{}", tok("", "FAKE0123456789ZYXW", 24), tok("", "FAKE0123456789ZYXW", 64))],
                s(&["dt0c01.short"]),
            ),
            (
                "contentful-token",
                vec![tok("CFPAT-", ALNUM, 43)],
                s(&["CFPAT-short"]),
            ),
            (
                "pinecone-api-key",
                vec![tok("pcsk_", ALNUM, 60)],
                s(&["pcsk_short"]),
            ),
            (
                "langsmith-api-key",
                vec![format!("lsv2_pt_{}_{}", tok("", HEX, 32), tok("", HEX, 10))],
                s(&["lsv2_pt_short"]),
            ),
            (
                "openshift-token",
                vec![tok("sha256~", ALNUM, 43)],
                s(&["sha256~abc"]),
            ),
            (
                "neon-api-key",
                vec![tok("napi_", "fake0123456789zyxw", 64)],
                s(&["napi_short"]),
            ),
            (
                "ci-platform-token",
                vec![
                    format!("CCIPAT_{}_{}", tok("", ALNUM, 22), tok("", HEX, 40)),
                    tok("bkua_", HEX, 40),
                    tok("rnd_", ALNUM, 32),
                ],
                s(&["rnd_seed", "bkua_x"]),
            ),
            (
                "brevo-api-key",
                vec![format!("xkeysib-{}-{}", tok("", HEX, 64), tok("", ALNUM, 16))],
                s(&["xkeysib-short"]),
            ),
            (
                "braintree-access-token",
                vec![format!("access_token$production${}${}", tok("", "fake0123456789", 16), tok("", HEX, 32))],
                s(&["access_token$production$x"]),
            ),
            (
                "cloudflare-origin-ca-key",
                vec![format!("v1.0-{}-{}", tok("", HEX, 24), tok("", HEX, 146))],
                s(&["v1.0-beta"]),
            ),
            (
                "harness-pat",
                vec![format!("pat.{}.{}.{}", tok("", ALNUM, 22), tok("", HEX, 24), tok("", ALNUM, 20))],
                s(&["pat.method()"]),
            ),
            (
                "payments-api-key",
                vec![
                    tok("shippo_live_", HEX, 40),
                    tok("duffel_test_", ALNUM, 43),
                    format!("FLWSECK_TEST-{}-X", tok("", "abcdefgh0123456789", 32)),
                ],
                s(&["shippo_live_x", "duffel_test_"]),
            ),
            (
                "developer-platform-token",
                vec![
                    tok("pnu_", ALNUM, 36),
                    tok("rdme_", "fake0123456789zyxw", 70),
                    tok("sgp_", HEX, 40),
                    tok("CLOJARS_", "fake0123456789zyxw", 60),
                ],
                s(&["pnu_x", "sgp_short"]),
            ),
            (
                "elevenlabs-api-key",
                vec![tok("sk_", HEX, 48)],
                s(&["sk_live", "sk_0123"]),
            ),
            (
                "private-key",
                s(&[
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
                    "-----BEGIN OPENSSH PRIVATE KEY-----",
                    "PuTTY-User-Key-File-3: ssh-ed25519",
                ]),
                s(&["-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----"]),
            ),
            (
                "age-secret-key",
                vec![tok(
                    "AGE-SECRET-KEY-1",
                    "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
                    58,
                )],
                s(&["AGE-SECRET-KEY-1XYZ"]),
            ),
            (
                "jwt",
                vec![format!(
                    "{}.{}.{}",
                    tok("eyJ", ALNUM, 20),
                    tok("eyJ", ALNUM, 40),
                    tok("", ALNUM, 43)
                )],
                s(&["eyJhbGciOi.short"]),
            ),
            (
                "basic-auth-credentials",
                s(&["Basic dXNlcjpwYXNzd29yZA=="]),
                s(&["Basic realm", "Bearer dXNlcjpwYXNzd29yZA=="]),
            ),
            (
                "connection-string-password",
                s(&[
                    "REDIS_URL=redis://:Fak3RedisPw-9x@cache:6379/0",
                    "postgres://admin:S3cr3tPass@db.internal:5432/app",
                    "https://user:Passw0rd1@example.com/",
                ]),
                s(&[
                    "postgres://user:${PGPASSWORD}@db/app",
                    "postgres://localhost:5432/app",
                    "https://user@example.com",
                ]),
            ),
            (
                "credential-assignment",
                s(&[
                    "password: S3cure!Pass",
                    r#""api_key": "Zx81kLmq2PzQ""#,
                    "DB_PASSWORD=hunter22",
                    "token=abcdef123456",
                    r#"{"apiToken": "k9Fz2LqW8x"}"#,
                    "AZURE_DEVOPS_PAT=abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst",
                ]),
                s(&[
                    "password: ${PASSWORD}",
                    "token: string",
                    "max_tokens: 1024",
                    "secret: my-feature-flag",
                    "bypass: Zx81kLmq2PzQ",
                    "path: /usr/local/bin/tool",
                    "compat=1.2.3.4.5.6",
                    "spat: Zx81kLmq2PzQ",
                ]),
            ),
            (
                "key-assignment",
                s(&[
                    "ENCRYPTION_KEY=Zx81kQp0LmN3vB7tR2sY9wE4uI6oP1aS",
                    "RAILS_MASTER_KEY: 3f9c2a7d81e64b05c9d2f1a8e7b3c640",
                    r#"{"signing_key": "base64:q8Zt3Lw0rkX2mVb7k9LpYd4Rf6Hs1Jn5Tc="}"#,
                ]),
                s(&[
                    "cache_key = user_profile_1234",
                    "primary_key: id",
                    "sort_key = created_at_desc_2024_v1",
                ]),
            ),
            (
                "authorization-credentials",
                s(&[
                    "authorization: Token 3f9c2a7d81e64b05c9d2f1a8e7b3c6400a1b2c3d",
                    "Authorization: Bot MTE5NDk2ODc3OTc2Nzk5NjE2Mg.GxYz12.q8Zt3Lw0rkX2mVb7k9LpYd4Rf6Hs1Jn5",
                    "x-auth: Zx81kQp0LmN3vB7tR2sY9wE4uI6oP1aS",
                ]),
                s(&["authorization: Negotiate", "x-auth-mode: interactive-login-flow"]),
            ),
            (
                "private-key-body",
                s(&[
                    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
                    "MIIEpAIBAAKCAQEAq8Zt3Lw0rkX2mVb7k9LpYd4Rf6Hs1Jn5TcWq2EaFAKEfakeFAKE0123",
                    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCq8Zt3Lw0rkX2mVb7k9LpYd4Rf6Hs1",
                ]),
                s(&[
                    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq8Zt3Lw0rkX2mVb7k9LpYd4Rf6Hs",
                    "b3BlbnNzaC1rZXktdjE",
                ]),
            ),
            (
                "jwk-private-key",
                s(&[
                    r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#,
                    r#"{"d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI", "kty": "OKP"}"#,
                ]),
                s(&[r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#]),
            ),
            (
                "cli-password",
                s(&[
                    "sshpass -p 'Wint3r-Sky-42!' ssh deploy@db",
                    "mysql -h db -uroot -pWint3r-Sky-42 prod < dump.sql",
                ]),
                s(&["mysql -u root -p prod", "mysql -h db -P 3306 -p"]),
            ),
            (
                "credential-flag",
                s(&[
                    "mysql --password=Sup3rS3cret! db",
                    "curl -u deploy:Fak3Passw0rd https://x",
                    "gh --token ghx9Fk2LmQ7z",
                ]),
                s(&["--password=$DB_PASSWORD", "--token string", "-u root"]),
            ),
            (
                "bearer-token",
                s(&["Bearer 9fKq2LmZ9xTb4NcR7vWd1YpE3sGh6JuA"]),
                s(&["Bearer token", "Bearer aaaaaaaaaaaaaaaaaaaaaaaa"]),
            ),
            (
                "crypto-seed-phrase",
                s(&[
                    "mnemonic: abandon ability able about above absent absorb abstract absurd abuse access accident",
                    "Secret Recovery Phrase:\n1. witch\n2. collapse\n3. practice\n4. feed\n5. shame\n6. open\n7. despair\n8. creek\n9. road\n10. again\n11. ice\n12. least",
                    r#"{"mnemonic":["abandon","ability","able","about","above","absent","absorb","abstract","absurd","abuse","access","accident"]}"#,
                ]),
                s(&[
                    "mnemonic: a short phrase",
                    "seed phrase is stored in the vault",
                ]),
            ),
            (
                "payment-card-number",
                s(&[
                    "card 4111 1111 1111 1111",
                    "cc=5500-0000-0000-0004",
                    "378282246310005",
                    // Maestro, Mir.
                    "6759 1234 5678 0006",
                    "2200 1234 5678 0000",
                ]),
                s(&[
                    "4111111111111112",
                    "order 1234567812345670",
                    "id 5555555555555555",
                ]),
            ),
            (
                "iban",
                s(&[
                    "GB82WEST12345698765432",
                    "iban: DE89 3704 0044 0532 0130 00",
                ]),
                s(&["GB82WEST12345698765433"]),
            ),
            (
                "crypto-private-key-or-address",
                vec![
                    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa".to_owned(),
                    "5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ".to_owned(),
                    wif,
                    // Litecoin, Dogecoin, Tron, Bitcoin's test network, a
                    // test-network WIF.
                    base58check_encode(&[&[0x30][..], &[0x42; 20]].concat()),
                    base58check_encode(&[&[0x1e][..], &[0x42; 20]].concat()),
                    base58check_encode(&[&[0x41][..], &[0x42; 20]].concat()),
                    base58check_encode(&[&[0x6f][..], &[0x42; 20]].concat()),
                    base58check_encode(&[&[0xef][..], &[0x22; 32], &[0x01]].concat()),
                ],
                s(&[
                    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",
                    "LM4939hJVNaRLJA6EwAFtWh9CfUSGJoi7N",
                ]),
            ),
            (
                "bitcoin-bech32-address",
                s(&[
                    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                    "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
                ]),
                s(&["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"]),
            ),
            (
                "crypto-extended-private-key",
                vec![xprv.clone()],
                vec![format!("{}1", &xprv[..xprv.len() - 1])],
            ),
        ]
    }

    #[test]
    fn every_rule_has_true_and_false_examples() {
        let table = examples();
        for rule in BUILTIN_RULES {
            let Some((_, yes, no)) = table.iter().find(|(name, _, _)| *name == rule.name) else {
                panic!("rule {} has no examples", rule.name);
            };
            assert!(!yes.is_empty() && !no.is_empty(), "{}", rule.name);
            for example in yes {
                assert!(fires(rule, example), "{} should match {example}", rule.name);
            }
            for example in no {
                assert!(
                    !fires(rule, example),
                    "{} should not match {example}",
                    rule.name
                );
            }
        }
        let mut names: Vec<_> = BUILTIN_RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILTIN_RULES.len(), "rule names are unique");
    }

    #[test]
    fn a_valid_github_checksum_raises_the_severity() {
        let rule = BUILTIN_RULES
            .iter()
            .find(|r| r.name == "github-pat")
            .unwrap();
        assert_eq!(
            matched(rule, &github_with_checksum("ghp_")),
            Some(Severity::Critical)
        );
        assert_eq!(matched(rule, &tok("ghp_", ALNUM, 36)), Some(Severity::High));
    }
}
