#include "check.h"
int main(void) { return check_exit("test_dfx_store"); }
