# Sourced by the control-plane benchmark scripts: an API key minted on a
# running `codeb serve` whose bootstrap admin is bench / bench-password
# (CODEB_ADMIN_USER / CODEB_ADMIN_PASSWORD), printed on stdout.
#
#   key=$(cp_api_key http://127.0.0.1:18185)
cp_api_key() {
    local at
    at=$(curl -s -X POST "$1/oidc.ashx/token" -d grant_type=password \
        -d client_id=codeb-admin -d username=bench -d password=bench-password | jq -r .access_token)
    curl -s -X POST -H "Authorization: Bearer $at" -H 'Content-Type: application/json' \
        -d '{"name":"bench"}' "$1/api.ashx/v1/api-keys" | jq -r .key
}
