/*
 * legate-sample: legate with one more HTTP filter, legate.test.sample,
 * and one more network filter, legate.test.sample_net, registered before legate's own main() runs (dataplane/main.c, compiled
 * again here with its main renamed).
 */
#include "filters/registry.h"

extern const struct dp_filter_ops dp_sample_filter;
extern const struct dp_net_filter_ops dp_sample_net_filter;
int legate_main(int argc, char **argv);

int main(int argc, char **argv)
{
    dp_filter_register(&dp_sample_filter);
    dp_net_filter_register(&dp_sample_net_filter);
    return legate_main(argc, argv);
}
