#include "server.h"

#include "xds/log.h"

int dp_server_check(const xds_bootstrap_t *bs, char *err, size_t errlen)
{
    (void)bs;
    (void)err;
    (void)errlen;
    return 0;
}

int dp_server_run(const struct dp_options *opt, const xds_bootstrap_t *bs)
{
    (void)bs;
    LG_E("main", "serving is not available yet in this build (only --mode validate); config %s",
         opt->config_path);
    return -1;
}
